"""Expiry with two billing replicas sweeping the same database: every hold past its TTL is
refunded exactly once, and a completion that arrives afterwards is charged after all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from sqlalchemy import text

from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.streams import GENERATION
from genimage_devstack.processes import NatsServer
from genimage_devstack.stack import ServiceProcess
from tests.billing import factories
from tests.billing.conftest import start_billing
from tests.billing.invariants import violations
from tests.billing.test_service import billing_events, call, credits, drained, registered_user, reserve
from tests.marks import starts_services
from tests.polling import eventually_async


@pytest.fixture(scope="module")
@starts_services
def replicas(
    private_nats: NatsServer, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    """Two replicas, holds of one second, sweeps every 100 ms in batches of 3 (so both take part)."""
    procs = start_billing(
        nats_url=private_nats.url,
        database_url=module_database_url,
        log_dir=Path(tmp_path_factory.mktemp("billing-logs")),
        replicas=2,
        hold_ttl_s="1",
        sweep_interval_s="0.1",
        sweep_batch="3",
    )
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


async def test_two_sweepers_expire_each_hold_once(
    replicas: list[ServiceProcess], nc: nats.NATS, module_database_url: str
) -> None:
    users = [await registered_user(nc, 40) for _ in range(4)]
    holds = {user: [await reserve(nc, user, 5) for _ in range(5)] for user in users}

    async def all_refunded() -> bool:
        return [await credits(nc, u) for u in users] == [{"available": 40, "reserved": 0}] * len(users)

    await eventually_async(all_refunded, timeout=20, what="every hold expired and refunded")
    for user in users:

        async def refunds_published(user: uuid.UUID = user) -> list[dict] | None:
            # The balance changes at commit; its event leaves through the outbox a moment later.
            events = await billing_events(nc, user)
            found = [e["data"] for e in events if e["type"].endswith("credits_refunded.v1")]
            return found if len(found) >= len(holds[user]) else None

        refunds = await eventually_async(refunds_published, timeout=20, what="refund events relayed")
        assert sorted(r["generation_id"] for r in refunds) == sorted(str(g) for g in holds[user])
        assert {r["reason"] for r in refunds} == {"expired"}
        statement = await call(nc, "ledger", {"user_id": str(user), "limit": 100})
        assert [i["type"] for i in statement["items"]].count("expire") == 5

    engine = make_engine(module_database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            expiries = (
                await session.execute(
                    text(
                        "SELECT generation_id, count(*) FROM billing.transfers"
                        " WHERE kind = 'expire' AND user_id = ANY(:users) GROUP BY 1"
                    ),
                    {"users": users},
                )
            ).all()
            assert await violations(session, users) == {}
    finally:
        await engine.dispose()
    assert len(expiries) == 20 and {n for _, n in expiries} == {1}


async def test_a_completion_after_expiry_is_charged_when_the_balance_allows(
    replicas: list[ServiceProcess], nc: nats.NATS
) -> None:
    user = await registered_user(nc, 30)
    gid = await reserve(nc, user, 10, units=2)

    async def expired() -> bool:
        return await credits(nc, user) == {"available": 30, "reserved": 0}

    await eventually_async(expired, timeout=20, what="hold expired")
    await factories.publish(nc.jetstream(), factories.completed(user, gid, outputs=2), stream=GENERATION)
    await drained(nc, "billing-generation-completed")
    assert await credits(nc, user) == {"available": 20, "reserved": 0}
    events = await billing_events(nc, user)
    last = [e["type"].split(".")[2] for e in events][-3:]
    assert last == ["credits_reserved", "credits_refunded", "credits_committed"]
    assert (events[-1]["data"]["amount"], events[-1]["data"]["released"]) == (10, 0)
