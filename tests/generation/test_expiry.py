"""The backstop (ADR 22): when billing refunds a hold because it expired, the generation ends
as ``failed`` with code ``expired`` — also while its job is queued behind busy slots, still
running, or was never even requested — with exactly one terminal event, and a job delivered
afterwards never renders."""

from __future__ import annotations

import uuid

import httpx
import pytest

from genimage_common.events import (
    CreditsRefunded,
    Event,
    GenerationCompleted,
    GenerationFailed,
    make_event,
)
from genimage_common.ids import new_id, transition_event_id
from genimage_common.storage import ObjectStore
from genimage_common.streams import BILLING, GENERATION
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus, kind_of
from tests.generation.fakes import Fakes
from tests.polling import eventually_async

pytestmark = pytest.mark.timeout(180)

CONCURRENCY = 3  # GENERATION_CONCURRENCY of the test worker


async def refund(bus: Bus, user_id: uuid.UUID, generation_id: uuid.UUID, reason: str = "expired") -> None:
    """``billing.credits_refunded`` as billing's sweeper publishes it."""
    data = CreditsRefunded(user_id=user_id, generation_id=generation_id, amount=5, reason=reason, balance=20)
    event = make_event(
        data, source="genimage/billing", subject=generation_id, event_id=transition_event_id(generation_id, "resolved")
    )
    await bus.publish(event, BILLING)


async def consumed(bus: Bus, durable: str, stream: str = GENERATION) -> bool:
    info = await bus.js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def jobs_running(worker: ServiceProcess) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{worker.url}/metrics")).text
    line = next(ln for ln in text.splitlines() if ln.startswith("genimage_generation_jobs_running "))
    return float(line.split()[1])


def assert_expired(event: Event) -> None:
    assert isinstance(event.data, GenerationFailed), event
    assert event.data.error.code == "expired" and event.data.error.retryable
    assert event.id == transition_event_id(event.data.generation_id, "terminal")


async def test_a_hold_expiring_while_the_job_waits_for_a_slot_fails_it(
    worker: ServiceProcess, bus: Bus, fakes: Fakes, store: ObjectStore
) -> None:
    # Every slot busy with a prediction that never finishes: the next job stays queued.
    busy = []
    for i in range(CONCURRENCY):
        prompt = fakes.script(f"expiry busy {i} {uuid.uuid4().hex[:6]}", ["slow"])
        busy.append(await bus.request(model="replicate-solo", prompt=prompt))
    try:
        await eventually_async(lambda: _equals(jobs_running(worker), CONCURRENCY), what="every slot busy")
        queued = await bus.request()
        uid, gid = queued.data.user_id, queued.data.generation_id
        info = await bus.js.consumer_info(GENERATION, "generation-requested")
        assert info.num_pending >= 1  # not fetched: no slot is free

        await refund(bus, uid, gid)
        done = await bus.terminal(uid)
        assert_expired(done)
        assert "generation.started" not in [kind_of(e) for e in await bus.events(uid)]
    finally:
        for req in busy:
            await bus.cancel(req.data.user_id, req.data.generation_id)

    # The slots free up and the queued job is delivered: it finds its outcome and renders nothing.
    await eventually_async(lambda: consumed(bus, "generation-requested"), timeout=30, what="queued job consumed")
    kinds = [kind_of(e) for e in await bus.events(uid)]
    assert kinds == ["generation.requested", "generation.failed"]
    assert await store.stat(f"users/{uid}/generations/{gid}/0.png") is None


async def test_a_running_job_whose_hold_expired_stops(worker: ServiceProcess, bus: Bus, fakes: Fakes) -> None:
    prompt = fakes.script(f"expiry running {uuid.uuid4().hex[:6]}", ["slow"])
    req = await bus.request(model="replicate-solo", prompt=prompt)
    uid, gid = req.data.user_id, req.data.generation_id

    await eventually_async(lambda: fakes.prediction_polled(prompt), what="prediction polled")
    await refund(bus, uid, gid)
    assert_expired(await bus.terminal(uid))
    (pid,) = {p for p, pred in fakes.predictions.items() if pred["prompt"] == prompt}
    await eventually_async(lambda: pid in fakes.canceled, what="prediction canceled upstream")
    await eventually_async(lambda: consumed(bus, "generation-requested"), what="job let go")
    kinds = [kind_of(e) for e in await bus.events(uid)]
    assert kinds.count("generation.failed") == 1 and "generation.completed" not in kinds
    assert "generation.canceled" not in kinds


async def test_a_hold_expired_for_a_request_never_published_ends_the_generation(
    worker: ServiceProcess, bus: Bus, store: ObjectStore
) -> None:
    # The gateway reserved, then died before publishing: billing's sweeper refunds the hold.
    uid, gid = uuid.uuid4(), new_id()
    await refund(bus, uid, gid)
    assert_expired(await bus.terminal(uid))
    # A client retry with the same idempotency key publishes the request later: no render.
    await bus.request(user_id=uid, generation_id=gid)
    await eventually_async(lambda: consumed(bus, "generation-requested"), what="late request consumed")
    assert [kind_of(e) for e in await bus.events(uid)] == ["generation.failed", "generation.requested"]
    assert await store.stat(f"users/{uid}/generations/{gid}/0.png") is None


async def test_other_refunds_and_finished_generations_are_left_alone(worker: ServiceProcess, bus: Bus) -> None:
    req = await bus.request()
    uid, gid = req.data.user_id, req.data.generation_id
    done = await bus.terminal(uid)
    assert isinstance(done.data, GenerationCompleted)
    # A hold that expired just as the job completed: the completion stands (billing charges it late).
    await refund(bus, uid, gid)
    other_uid = uuid.uuid4()
    await refund(bus, other_uid, new_id(), reason="failed")
    await eventually_async(lambda: consumed(bus, "generation-hold-expired", BILLING), what="refunds consumed")
    kinds = [kind_of(e) for e in await bus.events(uid)]
    assert kinds.count("generation.completed") == 1 and "generation.failed" not in kinds
    assert await bus.events(other_uid) == []


async def _equals(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected
