"""The billing service as a process on real NATS and PostgreSQL: its consumers, its RPCs, its
events and metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import DeliverPolicy

from genimage_common.errors import Conflict, InsufficientCredits, ValidationFailed, error_from_reply
from genimage_common.ids import new_id
from genimage_common.streams import BILLING, GENERATION, IDENTITY
from genimage_devstack.processes import NatsServer
from genimage_devstack.stack import ServiceProcess
from tests.billing import factories
from tests.billing.conftest import start_billing
from tests.marks import starts_services
from tests.polling import eventually_async

PLANS = [
    {
        "id": "small",
        "name": "Small",
        "credits": 50,
        "price_cents": 300,
        "currency": "eur",
        "stripe_price_id": "price_1",
    },
    {"id": "big", "name": "Big", "credits": 1000, "price_cents": 4000, "currency": "eur", "stripe_price_id": None},
]


@pytest.fixture(scope="module")
@starts_services
def billing(
    private_nats: NatsServer, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    (proc,) = start_billing(
        nats_url=private_nats.url,
        database_url=module_database_url,
        log_dir=Path(tmp_path_factory.mktemp("billing-logs")),
        plans=json.dumps(PLANS),
    )
    try:
        yield proc
    finally:
        proc.stop()


async def call(nc: nats.NATS, verb: str, payload: dict) -> dict:
    reply = await nc.request(f"rpc.billing.{verb}", json.dumps(payload).encode(), timeout=10)
    body = json.loads(reply.data)
    if isinstance(body, dict) and body.keys() == {"error"}:
        raise error_from_reply(body)
    return body


async def credits(nc: nats.NATS, user: uuid.UUID) -> dict:
    return await call(nc, "balance", {"user_id": str(user)})


async def drained(nc: nats.NATS, durable: str) -> None:
    """Wait until billing's durable consumer has acknowledged everything in its stream."""
    js = nc.jetstream()

    async def done() -> bool:
        info = await js.consumer_info(GENERATION, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually_async(done, timeout=20, what=f"{durable} drained")


async def stream_events(nc: nats.NATS, stream: str, subject: str) -> list[dict]:
    """Every event of ``stream`` on ``subject``, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    if not total:
        return []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        return [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(total)]
    finally:
        await sub.unsubscribe()


async def billing_events(nc: nats.NATS, user: uuid.UUID) -> list[dict]:
    return await stream_events(nc, BILLING, f"billing.*.{user}")


async def relayed_when(nc: nats.NATS, user: uuid.UUID, kind: str, count: int) -> list[dict] | None:
    """The ``data`` of the user's billing events of ``kind`` once there are ``count`` of them."""
    found = [e["data"] for e in await billing_events(nc, user) if e["type"].endswith(f"{kind}.v1")]
    return found if len(found) >= count else None


async def relayed(nc: nats.NATS, user: uuid.UUID, kind: str, count: int = 1) -> list[dict]:
    """The ``data`` of the user's billing events of ``kind`` once ``count`` are there: the outbox
    relay publishes them after the ledger's commit, so they may trail the balance by a moment."""
    return await eventually_async(lambda: relayed_when(nc, user, kind, count), timeout=20, what=f"{kind} relayed")


def names(events: list[dict]) -> list[str]:
    return [e["type"].split(".")[2] for e in events]


async def registered_user(nc: nats.NATS, credits_wanted: int = 20) -> uuid.UUID:
    """A user as the gateway makes one: ``identity.user_registered`` (signup grant of 20), then
    an admin grant up to ``credits_wanted``."""
    user = new_id()
    await factories.publish(nc.jetstream(), factories.registered(user), stream=IDENTITY)

    async def granted() -> bool:
        return (await credits(nc, user))["available"] == 20

    await eventually_async(granted, timeout=20, what="signup credits")
    if credits_wanted > 20:
        await call(
            nc,
            "grant",
            {"user_id": str(user), "amount": credits_wanted - 20, "reason": "admin", "reference": f"top-{user}"},
        )
    return user


async def test_registration_opens_the_account_with_the_signup_grant_once(
    billing: ServiceProcess, nc: nats.NATS
) -> None:
    user = await registered_user(nc)
    event = factories.registered(user)
    await factories.publish(nc.jetstream(), event, stream=IDENTITY, msg_id=f"again-{user}")  # a duplicate
    user2 = await registered_user(nc)  # consumed after the duplicate, in stream order
    assert await credits(nc, user) == {"available": 20, "reserved": 0}
    assert await credits(nc, user2) == {"available": 20, "reserved": 0}
    await relayed(nc, user, "credits_granted")
    assert names(await billing_events(nc, user)) == ["account_opened", "credits_granted"]


async def test_plans_come_from_configuration(billing: ServiceProcess, nc: nats.NATS) -> None:
    assert await call(nc, "plans", {}) == {"items": PLANS}


async def test_a_purchase_is_granted_once_per_reference(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc)
    body = {"user_id": str(user), "amount": 50, "reason": "purchase", "reference": f"evt_{user.hex}"}
    replies = await asyncio.gather(*(call(nc, "grant", body) for _ in range(10)))
    assert replies == [{"available": 70, "reserved": 0}] * 10
    with pytest.raises(Conflict):
        await call(nc, "grant", {**body, "amount": 51})
    with pytest.raises(ValidationFailed):
        await call(nc, "grant", {**body, "reason": "signup"})
    with pytest.raises(ValidationFailed):
        await call(nc, "grant", {**body, "amount": -5})
    assert await credits(nc, user) == {"available": 70, "reserved": 0}
    granted = await relayed(nc, user, "credits_granted", 2)
    assert [(e["reason"], e["amount"]) for e in granted] == [("signup", 20), ("purchase", 50)]


async def test_200_concurrent_reserve_requests_of_5_against_100(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc, 100)

    async def reserve() -> str:
        body = {"generation_id": str(new_id()), "user_id": str(user), "amount": 5, "units": 1}
        try:
            reply = await call(nc, "reserve", body)
        except InsufficientCredits:
            return "insufficient_credits"
        assert reply["hold"]["status"] == "pending" and reply["hold"]["expires_at"]
        return "reserved"

    results = await asyncio.gather(*(reserve() for _ in range(200)))
    assert results.count("reserved") == 20 and results.count("insufficient_credits") == 180
    assert await credits(nc, user) == {"available": 0, "reserved": 100}


async def reserve(nc: nats.NATS, user: uuid.UUID, amount: int, units: int = 1) -> uuid.UUID:
    gid = new_id()
    reply = await call(
        nc, "reserve", {"generation_id": str(gid), "user_id": str(user), "amount": amount, "units": units}
    )
    assert reply["hold"]["amount"] == amount
    return gid


async def test_duplicated_and_redelivered_completions_commit_once(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc)
    gid = await reserve(nc, user, 10, units=2)
    js = nc.jetstream()
    done = factories.completed(user, gid, outputs=1)
    await factories.publish(js, done, stream=GENERATION)
    await factories.publish(js, done, stream=GENERATION)  # deduplicated by JetStream
    await factories.publish(js, done, stream=GENERATION, msg_id=f"copy-{gid}")  # a copy past the window
    await factories.publish(js, factories.completed(user, gid, outputs=2, event_id=new_id()), stream=GENERATION)
    await drained(nc, "billing-generation-completed")
    assert await credits(nc, user) == {"available": 15, "reserved": 0}
    committed = await relayed(nc, user, "credits_committed")
    assert [(c["amount"], c["released"]) for c in committed] == [(5, 5)]
    ledger = await call(nc, "ledger", {"user_id": str(user), "limit": 10})
    assert [(i["type"], i["amount"], i["balance_after"]) for i in ledger["items"]] == [
        ("release", 5, 15),
        ("commit", 0, 10),
        ("reserve", -10, 10),
        ("grant", 20, 20),
    ]


async def test_a_failure_after_the_completion_refunds_nothing(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc)
    gid = await reserve(nc, user, 5)
    js = nc.jetstream()
    await factories.publish(js, factories.completed(user, gid, outputs=1), stream=GENERATION)
    await drained(nc, "billing-generation-completed")
    await factories.publish(js, factories.failed(user, gid, event_id=new_id()), stream=GENERATION)
    await factories.publish(js, factories.canceled(user, gid, event_id=new_id()), stream=GENERATION)
    await drained(nc, "billing-generation-failed")
    await drained(nc, "billing-generation-canceled")
    assert await credits(nc, user) == {"available": 15, "reserved": 0}
    assert "credits_refunded" not in names(await billing_events(nc, user))


async def test_a_canceled_generation_is_refunded_once(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc)
    gid = await reserve(nc, user, 15, units=3)
    event = factories.canceled(user, gid)
    js = nc.jetstream()
    await factories.publish(js, event, stream=GENERATION)
    await factories.publish(js, event, stream=GENERATION, msg_id=f"copy-{gid}")
    await drained(nc, "billing-generation-canceled")
    assert await credits(nc, user) == {"available": 20, "reserved": 0}
    refunds = await relayed(nc, user, "credits_refunded")
    assert [(r["amount"], r["reason"]) for r in refunds] == [(15, "canceled")]


async def test_events_leave_in_order_per_account(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc, 40)
    first, second = await reserve(nc, user, 5), await reserve(nc, user, 5)
    js = nc.jetstream()
    await factories.publish(js, factories.failed(user, second), stream=GENERATION)
    await drained(nc, "billing-generation-failed")
    await factories.publish(js, factories.completed(user, first), stream=GENERATION)
    await drained(nc, "billing-generation-completed")

    async def all_out() -> bool:
        return len(await billing_events(nc, user)) == 7

    await eventually_async(all_out, timeout=20, what="billing events published")
    events = await billing_events(nc, user)
    assert names(events) == [
        "account_opened",
        "credits_granted",
        "credits_granted",
        "credits_reserved",
        "credits_reserved",
        "credits_refunded",
        "credits_committed",
    ]
    assert [e["data"].get("balance") for e in events[1:]] == [20, 40, 35, 30, 35, 35]


async def test_bad_requests_are_validation_errors(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = str(new_id())
    for verb, body in [
        ("reserve", {"generation_id": "nope", "user_id": user, "amount": 5}),
        ("reserve", {"generation_id": str(new_id()), "user_id": user, "amount": 0}),
        ("reserve", {"generation_id": str(new_id()), "user_id": user, "amount": 5, "units": 0}),
        ("ledger", {"user_id": user, "limit": 1000}),
        ("ledger", {"user_id": user, "cursor": "abc"}),
        ("grant", {"user_id": user, "amount": 5, "reason": "admin", "reference": ""}),
    ]:
        with pytest.raises(ValidationFailed):
            await call(nc, verb, body)
    assert await call(nc, "ledger", {"user_id": user}) == {"items": [], "next_cursor": None}
    assert await credits(nc, uuid.UUID(user)) == {"available": 0, "reserved": 0}


async def test_metrics_count_credits_by_operation(billing: ServiceProcess, nc: nats.NATS) -> None:
    user = await registered_user(nc)
    await reserve(nc, user, 5)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{billing.url}/metrics", timeout=5)).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("genimage_credits_total", "genimage_holds_pending"))
    }
    assert samples['genimage_credits_total{operation="grant"}'] >= 20
    assert samples['genimage_credits_total{operation="reserve"}'] >= 5
    assert 'genimage_credits_total{operation="expire"}' in samples
    assert "genimage_holds_pending" in samples
