"""Concurrent reserves against one balance: the database serialises them on the account row;
exactly as many succeed as the balance covers, never one more."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text

from billing import ledger
from billing.deps import Deps
from genimage_common.database import SessionMaker
from genimage_common.errors import InsufficientCredits
from genimage_common.ids import new_id
from tests.billing.factories import funded_user
from tests.billing.invariants import violations


async def test_200_concurrent_reserves_of_5_against_100_exactly_20_succeed(deps: Deps) -> None:
    user = await funded_user(deps.sessions, 100)
    start = asyncio.Event()

    async def one() -> str:
        await start.wait()
        try:
            async with deps.uow.transaction() as session:
                await ledger.reserve(session, user_id=user, generation_id=new_id(), amount=5, ttl=timedelta(minutes=15))
        except InsufficientCredits:
            return "insufficient_credits"
        return "reserved"

    tasks = [asyncio.create_task(one()) for _ in range(200)]
    start.set()
    results = await asyncio.gather(*tasks)
    assert results.count("reserved") == 20
    assert results.count("insufficient_credits") == 180
    async with deps.sessions() as session:
        bal = await ledger.balance(session, user_id=user)
        holds = await session.scalar(text("SELECT count(*) FROM billing.holds WHERE status = 'pending'"))
        assert await violations(session) == {}
    assert (bal.available, bal.held, holds) == (0, 100, 20)


async def test_concurrent_replays_of_one_reserve_hold_once(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 100)
    gid = new_id()

    async def one() -> ledger.Hold:
        async with sessions.begin() as session:
            hold, _ = await ledger.reserve(
                session, user_id=user, generation_id=gid, amount=5, ttl=timedelta(minutes=15)
            )
        return hold

    holds = await asyncio.gather(*(one() for _ in range(30)))
    assert {h.expires_at for h in holds} == {holds[0].expires_at}
    async with sessions() as session:
        bal = await ledger.balance(session, user_id=user)
    assert (bal.available, bal.held) == (95, 5)


async def test_concurrent_grants_of_one_reference_apply_once(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 0)

    async def one() -> None:
        async with sessions.begin() as session:
            await ledger.grant(session, user_id=user, amount=50, reason="purchase", reference="evt_concurrent")

    await asyncio.gather(*(one() for _ in range(30)))
    async with sessions() as session:
        bal = await ledger.balance(session, user_id=user)
    assert (bal.available, bal.held) == (50, 0)
