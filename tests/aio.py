"""Coroutines from synchronous tests and fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own. Unlike ``asyncio.run``, it neither touches nor
    replaces the loop the session's async fixtures live on (``asyncio.run`` leaves the thread
    without a current loop when it is done)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
