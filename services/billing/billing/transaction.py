"""The unit of work of every entry point: one transaction; after its commit, the credits it
moved are counted and the outbox relay is woken to publish its events at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from . import metrics
from .deps import Deps


@asynccontextmanager
async def transaction(deps: Deps) -> AsyncIterator[AsyncSession]:
    async with deps.sessions() as session:
        try:
            async with session.begin():
                yield session
        except BaseException:
            metrics.discard(session)
            raise
        metrics.observe_committed(session)
    if deps.relay is not None:
        deps.relay.wake()
