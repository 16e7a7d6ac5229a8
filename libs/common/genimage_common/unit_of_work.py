"""The unit of work of every entry point (a route, a consumer, an RPC handler): one session, one
transaction, committed when the block ends (rolled back if it raises). Domain functions take the
session and never commit.

What must happen only once the transaction is committed is registered on the session while it
runs and done after the commit, never for a rollback:

- rows added to the outbox (``outbox.enqueue`` notes them) wake the outbox relay, so their
  events leave at once instead of at the relay's next poll;
- ``on_commit(session, callback)``: anything else (counting credits moved, waking a sender).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from .database import SessionMaker

log = logging.getLogger(__name__)

_AFTER_COMMIT = "genimage.after_commit"
_OUTBOX_WRITTEN = "genimage.outbox_written"


class Wakeable(Protocol):
    def wake(self) -> None: ...


def on_commit(session: AsyncSession, callback: Callable[..., object], *args: object) -> None:
    """Call ``callback(*args)`` once the unit of work that owns ``session`` has committed."""
    session.info.setdefault(_AFTER_COMMIT, []).append(partial(callback, *args))


def note_outbox_write(session: AsyncSession) -> None:
    """The transaction of ``session`` adds outbox rows: wake the relay after its commit."""
    session.info[_OUTBOX_WRITTEN] = True


class UnitOfWork:
    """``transaction()`` for work that writes; ``read()`` for queries (on ``readers`` when given:
    autocommit sessions, no BEGIN/ROLLBACK round trips around a read)."""

    def __init__(self, sessions: SessionMaker, *, relay: Wakeable | None = None, readers: SessionMaker | None = None):
        self.sessions = sessions
        self.relay = relay
        self.readers = readers or sessions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            try:
                async with session.begin():
                    yield session
            except BaseException:
                _forget(session)
                raise
            callbacks = session.info.pop(_AFTER_COMMIT, [])
            outbox_written = session.info.pop(_OUTBOX_WRITTEN, False)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the transaction is committed: a failed side effect must not undo that
                log.exception("after-commit callback failed")
        if outbox_written and self.relay is not None:
            self.relay.wake()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.readers() as session:
            yield session


def _forget(session: AsyncSession) -> None:
    session.info.pop(_AFTER_COMMIT, None)
    session.info.pop(_OUTBOX_WRITTEN, None)
