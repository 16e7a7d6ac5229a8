"""What gateway tests do over and over: queue a generation, wait for it, read an SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api import TestUser

SMALL = {"width": 64, "height": 64}


def generate(api: httpx.Client, user: TestUser, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/generations", headers=user.auth, json={"prompt": "a small test picture", **SMALL, **body})
    assert r.status_code == 202, r.text
    return r.json()


@dataclass
class SseEvent:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Parses a ``text/event-stream`` response line by line, within ``timeout`` seconds overall.

    The client's read timeout cannot end a wait for an event that never comes: the gateway
    sends a heartbeat every second, so every read succeeds. The reader's own deadline does."""

    def __init__(self, response: httpx.Response, *, timeout: float = 60.0) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines: Iterator[str] = response.iter_lines()
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout

    def _within_deadline(self) -> Iterator[str]:
        for line in self._lines:
            if time.monotonic() > self._deadline:
                raise AssertionError(f"the awaited event did not come within {self._timeout}s (heartbeats only)")
            yield line

    def next(self, *, skip_comments: bool = True) -> SseEvent | None:
        """The next event (None at the end of the stream); comment-only blocks are heartbeats."""
        current = SseEvent()
        seen = False
        for line in self._within_deadline():
            if line == "":
                if current.event is not None or current.data or current.id is not None:
                    return current
                if current.comments and not skip_comments:
                    return current
                current, seen = SseEvent(), False
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                current.comments.append(value)
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value
            elif name == "data":
                current.data = f"{current.data}\n{value}" if current.data else value
        return current if seen and (current.event or current.data) else None

    def until(self, event_type: str) -> list[SseEvent]:
        """Events up to and including the first of ``event_type``."""
        out: list[SseEvent] = []
        while True:
            event = self.next()
            assert event is not None, f"stream ended before {event_type}: {[e.event for e in out]}"
            out.append(event)
            if event.event == event_type:
                return out
