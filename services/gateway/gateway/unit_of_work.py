"""The unit of work a route opens when what it does must go on after the commit: the shared
one (``genimage_common.unit_of_work``: one transaction, the outbox relay woken after its
commit), plus

- steps awaited once it committed, whose failure is the request's failure
  (``genimage_common.unit_of_work.on_commit`` is for side effects that may fail quietly, such
  as waking a sender; queueing a generation is not one: the client must hear it was not);
- a compensation for what the transaction cannot undo (credits reserved in billing), run
  when it does not commit after all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.unit_of_work import UnitOfWork

Step = Callable[[], Awaitable[None]]
# Undoes what lies outside the transaction; returns the error the client should hear instead.
Compensation = Callable[..., Awaitable[Exception]]


class Work:
    """The session of the transaction, and what to do once it is committed."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._after_commit: list[Step] = []
        self._compensation: Compensation | None = None

    def after_commit(self, step: Step) -> None:
        """Await ``step`` once the transaction is committed (never for a rollback), in order;
        its error leaves the unit of work to the route."""
        self._after_commit.append(step)

    def if_rolled_back(self, compensation: Compensation) -> None:
        """When the transaction does not commit after all (a later error, a failed commit):
        ``await compensation(cause=error)``, and raise what it returns instead of the error."""
        self._compensation = compensation


@asynccontextmanager
async def unit_of_work(uow: UnitOfWork) -> AsyncIterator[Work]:
    work: Work | None = None
    try:
        async with uow.transaction() as session:
            work = Work(session)
            yield work
    except Exception as exc:
        if work is None or work._compensation is None:
            raise
        raise await work._compensation(cause=exc) from exc
    for step in work._after_commit:
        await step()
