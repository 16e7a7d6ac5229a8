"""Cancellation of running jobs inside one replica.

A cancel request reaches every replica through the shared state bucket (see ``state.py``);
the replica running the job finds its token here and sets it. Renderers working in threads
poll ``raise_if_canceled()`` between steps; coroutines race ``wait()``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from .errors import JobCanceled

T = TypeVar("T")


class CancelToken:
    def __init__(self) -> None:
        self._flag = threading.Event()
        self._event = asyncio.Event()

    def cancel(self) -> None:
        """Call from the event loop."""
        self._flag.set()
        self._event.set()

    @property
    def canceled(self) -> bool:
        return self._flag.is_set()

    def raise_if_canceled(self) -> None:
        """Safe to call from worker threads."""
        if self._flag.is_set():
            raise JobCanceled()

    async def wait(self) -> None:
        await self._event.wait()

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless the token fires first; then ``work`` is cancelled and
        ``JobCanceled`` raised (an HTTP call in flight is abandoned at once)."""
        if self.canceled:
            if asyncio.iscoroutine(work):
                work.close()  # never started: no "never awaited" warning
            raise JobCanceled()
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, JobCanceled):
            pass
        raise JobCanceled()


class CancelRegistry:
    """The tokens of the jobs this replica is running, by generation id."""

    def __init__(self) -> None:
        self._tokens: dict[uuid.UUID, CancelToken] = {}

    @contextmanager
    def track(self, generation_id: uuid.UUID) -> Iterator[CancelToken]:
        token = CancelToken()
        self._tokens[generation_id] = token
        try:
            yield token
        finally:
            if self._tokens.get(generation_id) is token:
                del self._tokens[generation_id]

    def cancel(self, generation_id: uuid.UUID) -> bool:
        token = self._tokens.get(generation_id)
        if token is None:
            return False
        token.cancel()
        return True

    def __len__(self) -> int:
        return len(self._tokens)
