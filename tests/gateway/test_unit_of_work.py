"""The unit of work a route opens when work must go on after the commit (queueing a
generation): steps after the commit, a compensation when it does not commit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import repository
from gateway.unit_of_work import unit_of_work
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.errors import ServiceUnavailable
from genimage_common.unit_of_work import UnitOfWork

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
async def engine(stack_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(stack_env["DATABASE_URL"], pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _subscribed(engine: AsyncEngine, generation_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM identity.webhook_subscriptions WHERE generation_id = :id")
        return bool(await conn.scalar(query, {"id": generation_id}))


async def _subscribe(session, generation_id: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    await repository.insert_webhook_subscription(
        session, generation_id=generation_id, user_id=uuid.uuid4(), url="http://127.0.0.1/x", events=["completed"]
    )


async def test_steps_run_in_order_once_committed_and_their_error_is_the_requests(engine: AsyncEngine) -> None:
    uow = UnitOfWork(make_sessionmaker(engine))
    generation_id = uuid.uuid4()
    seen: list[tuple[str, bool]] = []

    async def first() -> None:
        seen.append(("first", await _subscribed(engine, generation_id)))

    async def second() -> None:
        seen.append(("second", await _subscribed(engine, generation_id)))
        raise ServiceUnavailable("not queued")

    with pytest.raises(ServiceUnavailable, match="not queued"):
        async with unit_of_work(uow) as work:
            await _subscribe(work.session, generation_id)
            work.after_commit(first)
            work.after_commit(second)
            assert seen == []
    # Each step saw the committed row: it ran after the commit, not before.
    assert seen == [("first", True), ("second", True)]


async def test_a_unit_that_does_not_commit_is_compensated_and_runs_no_step(engine: AsyncEngine) -> None:
    uow = UnitOfWork(make_sessionmaker(engine))
    generation_id = uuid.uuid4()
    causes: list[BaseException] = []
    steps: list[str] = []

    async def compensate(*, cause: Exception) -> Exception:
        causes.append(cause)
        return ServiceUnavailable("given back")

    async def step() -> None:
        steps.append("ran")

    with pytest.raises(ServiceUnavailable, match="given back") as raised:
        async with unit_of_work(uow) as work:
            await _subscribe(work.session, generation_id)
            work.if_rolled_back(compensate)
            work.after_commit(step)
            raise RuntimeError("later failure")
    assert [type(c) for c in causes] == [RuntimeError] and raised.value.__cause__ is causes[0]
    assert steps == [] and not await _subscribed(engine, generation_id)

    # Before a compensation is registered, an error is the request's as it is.
    with pytest.raises(RuntimeError, match="early"):
        async with unit_of_work(uow) as work:
            await _subscribe(work.session, generation_id)
            raise RuntimeError("early")
    assert not await _subscribed(engine, generation_id)
