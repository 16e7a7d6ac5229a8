"""The unit of work on the session's real PostgreSQL: it commits at the end of the block or rolls
back on an error; what was registered for after the commit runs only after a commit, and the
outbox relay is woken exactly when the transaction added outbox rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import MetaData, func, select, text

from genimage_common.database import SessionMaker, make_engine, make_sessionmaker
from genimage_common.events import CreditsGranted, make_event
from genimage_common.outbox import enqueue, outbox_table
from genimage_common.unit_of_work import UnitOfWork, on_commit

pytestmark = pytest.mark.timeout(60)


class Relay:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@dataclass
class Setup:
    sessions: SessionMaker
    table: object
    relay: Relay
    uow: UnitOfWork


@pytest.fixture()
async def setup(stack_env: dict[str, str]) -> AsyncIterator[Setup]:
    schema = f"uow_t_{uuid.uuid4().hex[:10]}"
    engine = make_engine(stack_env["DATABASE_URL"], pool_size=2)
    table = outbox_table(MetaData(schema=schema))
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(table.metadata.create_all)
    sessions = make_sessionmaker(engine)
    relay = Relay()
    try:
        yield Setup(sessions, table, relay, UnitOfWork(sessions, relay=relay))
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


def event() -> object:
    data = CreditsGranted(user_id=uuid.uuid4(), amount=5, reason="promo", reference="r", balance=5)
    return make_event(data, source="tests", subject="s")


async def rows(setup: Setup) -> int:
    async with setup.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(setup.table)) or 0)  # type: ignore[arg-type]


async def test_commit_then_side_effects_then_the_relay(setup: Setup) -> None:
    done: list[str] = []
    async with setup.uow.transaction() as session:
        await enqueue(session, setup.table, event(), stream="S")  # type: ignore[arg-type]
        on_commit(session, done.append, "counted")
        assert done == [] and setup.relay.woken == 0  # nothing before the commit
    assert await rows(setup) == 1
    assert done == ["counted"] and setup.relay.woken == 1


async def test_a_rollback_does_nothing_after(setup: Setup) -> None:
    done: list[str] = []
    with pytest.raises(RuntimeError):
        async with setup.uow.transaction() as session:
            await enqueue(session, setup.table, event(), stream="S")  # type: ignore[arg-type]
            on_commit(session, done.append, "counted")
            raise RuntimeError("the domain refused")
    assert await rows(setup) == 0
    assert done == [] and setup.relay.woken == 0
    # The next unit of work on a pooled connection does not inherit what was registered.
    async with setup.uow.transaction() as session:
        await session.execute(text("SELECT 1"))
    assert done == [] and setup.relay.woken == 0


async def test_no_outbox_row_no_wake(setup: Setup) -> None:
    async with setup.uow.transaction() as session:
        await session.execute(text("SELECT 1"))
    async with setup.uow.read() as session:
        await session.execute(text("SELECT 1"))
    assert setup.relay.woken == 0
