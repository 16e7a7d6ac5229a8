"""Live progress from NATS: Server-Sent Events feeds and ``Prefer: wait``.

SSE feeds read JetStream with ephemeral ordered consumers filtered on the user's subjects
(``<domain>.*.<user_id>``), so a feed never sees another user's events. Each SSE ``id`` is
the position in the streams (their sequence numbers), and ``Last-Event-ID`` resumes right
after it, whatever replica serves the reconnection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Gauge
from sse_starlette import ServerSentEvent

from genimage_common.contracts.records import GenerationRecord
from genimage_common.contracts.status import TERMINAL_EVENTS, is_terminal
from genimage_common.errors import ValidationFailed
from genimage_common.events import UnknownEventType, parse_event
from genimage_common.streams import BILLING, GALLERY, GENERATION
from genimage_common.subjects import event_name, user_domain, user_events

from . import presenters
from .presenters import Links

log = logging.getLogger(__name__)

SSE_CONNECTIONS = Gauge("genimage_sse_connections", "Open Server-Sent Events streams")

# Streams of the user feed, in cursor order (the order of ``subjects.user_events``): the id
# `12-4-7` is GENERATION seq 12, BILLING seq 4, GALLERY seq 7.
USER_FEED = (GENERATION, BILLING, GALLERY)
RETRY_MS = 2000
QUEUE_SIZE = 256


# Stream sequences are unsigned 64-bit in NATS; cursors stay within a signed BIGINT so every
# store and client can hold them. ASCII digits only: ``str.isdigit()`` accepts "²" (and Arabic-Indic digits),
# which ``int()`` then refuses.
_SEQ = r"(?:0|[1-9][0-9]{0,18})"
MAX_SEQ = 2**63 - 1


def parse_cursor(value: str | None, parts: int) -> list[int] | None:
    """The stream positions in a ``Last-Event-ID`` (None when absent or empty, which the SSE
    specification uses for "no id"); anything else that is not ``parts`` ASCII numbers joined
    by ``-`` is a ``ValidationFailed``."""
    if value is None or value == "":
        return None
    pieces = value.split("-")
    if len(pieces) != parts or not all(re.fullmatch(_SEQ, p) for p in pieces):
        raise _not_an_id()
    seqs = [int(p) for p in pieces]
    if any(s > MAX_SEQ for s in seqs):
        raise _not_an_id()
    return seqs


def _not_an_id() -> ValidationFailed:
    return ValidationFailed(
        "Last-Event-ID is not an id of this feed",
        errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not an id of this feed"}],
    )


def format_cursor(seqs: list[int]) -> str:
    return "-".join(str(s) for s in seqs)


async def _subscribe(
    js: JetStreamContext,
    *,
    stream: str,
    subject: str,
    queue: asyncio.Queue[tuple[int, Msg]],
    index: int,
    start_seq: int | None = None,
    start_time: datetime | None = None,
) -> Any:
    async def on_message(msg: Msg) -> None:
        await queue.put((index, msg))  # a slow client slows its consumer (flow control)

    if start_seq is not None:
        policy, config = DeliverPolicy.BY_START_SEQUENCE, ConsumerConfig(opt_start_seq=max(start_seq, 1))
    else:
        policy, config = DeliverPolicy.BY_START_TIME, ConsumerConfig(opt_start_time=start_time)
    return await js.subscribe(
        subject,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=policy,
        config=config,
        idle_heartbeat=5.0,
    )


async def _close(subs: list[Any]) -> None:
    for sub in subs:
        with suppress(Exception):
            await sub.unsubscribe()


def _event(msg: Msg, links: Links) -> dict[str, Any] | None:
    try:
        return presenters.event(parse_event(msg.data), links)
    except (UnknownEventType, ValueError):
        log.warning("undecodable event skipped in a live feed", extra={"subject": msg.subject})
        return None


def _sse(event: dict[str, Any], cursor: str | None) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(event, separators=(",", ":")), event=event["type"], id=cursor)


async def user_feed(
    js: JetStreamContext, *, user_id: uuid.UUID, last_event_id: str | None, links: Links
) -> AsyncIterator[ServerSentEvent]:
    """Every generation, billing and gallery event of one user, live, from the position in
    ``last_event_id`` (exclusive) or from now."""
    cursor = parse_cursor(last_event_id, len(USER_FEED))
    if cursor is None:
        cursor = [(await js.stream_info(stream)).state.last_seq for stream in USER_FEED]
    queue: asyncio.Queue[tuple[int, Msg]] = asyncio.Queue(maxsize=QUEUE_SIZE)
    subs: list[Any] = []
    SSE_CONNECTIONS.inc()
    try:
        for index, (stream, subject) in enumerate(zip(USER_FEED, user_events(user_id), strict=True)):
            subs.append(
                await _subscribe(
                    js, stream=stream, subject=subject, queue=queue, index=index, start_seq=cursor[index] + 1
                )
            )
        yield ServerSentEvent(
            data=json.dumps({"cursor": format_cursor(cursor)}), event="ready", id=format_cursor(cursor), retry=RETRY_MS
        )
        while True:
            index, msg = await queue.get()
            seq = msg.metadata.sequence.stream
            if seq <= cursor[index]:
                continue  # redelivered after an ordered-consumer reset
            cursor[index] = seq
            event = _event(msg, links)
            if event is not None:
                yield _sse(event, format_cursor(cursor))
    finally:
        SSE_CONNECTIONS.dec()
        await _close(subs)


async def generation_feed(
    js: JetStreamContext,
    *,
    user_id: uuid.UUID,
    generation: GenerationRecord,
    last_event_id: str | None,
    links: Links,
) -> AsyncIterator[ServerSentEvent]:
    """The events of one generation, from its start (or after ``last_event_id``); ends with
    its terminal event."""
    generation_id = str(generation.id)
    cursor = parse_cursor(last_event_id, 1)
    finished = is_terminal(generation.status)
    queue: asyncio.Queue[tuple[int, Msg]] = asyncio.Queue(maxsize=QUEUE_SIZE)
    subs: list[Any] = []
    SSE_CONNECTIONS.inc()
    try:
        if cursor is not None:
            start: dict[str, Any] = {"start_seq": cursor[0] + 1}
        elif generation.created_at is not None:
            # A margin for clock differences between the gateway that stamped it and NATS.
            start = {"start_time": generation.created_at - timedelta(seconds=30)}
        else:
            start = {"start_seq": 1}
        subject = user_domain("generation", user_id)
        sub = await _subscribe(js, stream=GENERATION, subject=subject, queue=queue, index=0, **start)
        subs.append(sub)
        yield ServerSentEvent(
            data=json.dumps({"generation_id": generation_id}),
            event="ready",
            id=format_cursor(cursor) if cursor else None,
            retry=RETRY_MS,
        )
        if finished:
            info = await sub.consumer_info()
            if info.num_pending == 0 and not info.delivered.consumer_seq:
                return  # it ended before the position asked for: nothing more will come
        while True:
            _, msg = await queue.get()
            seq = msg.metadata.sequence.stream
            if cursor is not None and seq <= cursor[0]:
                continue
            cursor = [seq]
            event = _event(msg, links)
            if event is not None and str(event["data"].get("generation_id")) == generation_id:
                yield _sse(event, format_cursor(cursor))
                if event["type"] in TERMINAL_EVENTS:
                    return
            if finished and msg.metadata.num_pending == 0:
                return
    finally:
        SSE_CONNECTIONS.dec()
        await _close(subs)


class TerminalWatch:
    """Terminal events of one user's generations as they happen (core NATS sees JetStream
    publishes too). Enter it before publishing the request, so nothing can be missed."""

    def __init__(self, nc: Nats, user_id: uuid.UUID) -> None:
        self._nc = nc
        self._user_id = user_id
        self._done: dict[str, asyncio.Event] = {}
        self._sub: Any = None

    async def __aenter__(self) -> TerminalWatch:
        self._sub = await self._nc.subscribe(user_domain("generation", self._user_id), cb=self._on_message)
        await self._nc.flush()  # the server knows the subscription before we go on
        return self

    async def __aexit__(self, *exc: object) -> None:
        with suppress(Exception):
            await self._sub.unsubscribe()

    def _flag(self, generation_id: str) -> asyncio.Event:
        return self._done.setdefault(generation_id, asyncio.Event())

    async def _on_message(self, msg: Msg) -> None:
        if event_name(msg.subject) not in TERMINAL_EVENTS:
            return
        try:
            generation_id = json.loads(msg.data)["data"]["generation_id"]
        except (ValueError, KeyError, TypeError):
            return
        self._flag(str(generation_id)).set()

    async def wait(self, generation_id: uuid.UUID, timeout: float) -> bool:
        """True when the generation reached a terminal state within ``timeout`` seconds."""
        if timeout <= 0:
            return self._flag(str(generation_id)).is_set()
        try:
            await asyncio.wait_for(self._flag(str(generation_id)).wait(), timeout)
        except TimeoutError:
            return False
        return True
