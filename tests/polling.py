"""Polling with a deadline: the one way a test waits for something to happen (never a bare
sleep standing in for synchronisation), from synchronous and from async tests alike."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _attempts(timeout: float) -> Iterator[None]:
    """One step per attempt until ``timeout``; the first attempt is always made, so a probe that
    is already true passes however small the deadline."""
    deadline = time.monotonic() + timeout
    yield
    while time.monotonic() < deadline:
        yield


def _not_reached(timeout: float, what: str, probe: object, last: object) -> AssertionError:
    return AssertionError(f"not reached within {timeout}s: {what or probe!r}; last value: {last!r}")


def eventually(probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> T:
    """Call ``probe`` until it returns a truthy value and return that; fail with its last value
    after ``timeout`` seconds."""
    last: T | None = None
    for _ in _attempts(timeout):
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise _not_reached(timeout, what, probe, last)


async def eventually_async(
    probe: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """``eventually`` for async tests: ``probe`` may be a coroutine function or a plain one, and
    the event loop keeps running between attempts."""
    last: T | None = None
    for _ in _attempts(timeout):
        value = probe()
        last = await value if inspect.isawaitable(value) else value  # type: ignore[assignment]
        if last:
            return last
        await asyncio.sleep(interval)
    raise _not_reached(timeout, what, probe, last)
