"""Cancellation through ``generation.cancel_requested``: a queued job never runs, a running one
stops, exactly one ``canceled`` event (the terminal event id), and a finished generation stays
finished."""

from __future__ import annotations

import uuid

import httpx

from genimage_common.events import GenerationCanceled, GenerationCompleted, GenerationProgress
from genimage_common.ids import new_id, transition_event_id
from genimage_common.storage import ObjectStore
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus, kind_of
from tests.generation.fakes import Fakes
from tests.polling import eventually_async


async def terminal_messages(bus: Bus, user_id: uuid.UUID) -> list[str]:
    return [kind_of(e) for e in await bus.events(user_id) if kind_of(e) != "generation.progress"]


async def jobs_running(worker: ServiceProcess) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{worker.url}/metrics")).text
    line = next(ln for ln in text.splitlines() if ln.startswith("genimage_generation_jobs_running "))
    return float(line.split()[1])


async def test_a_queued_job_never_runs(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    uid, gid = uuid.uuid4(), new_id()
    await bus.cancel(uid, gid)  # the cancel is handled before the worker ever sees the request
    canceled = await bus.terminal(uid)
    assert isinstance(canceled.data, GenerationCanceled) and canceled.id == transition_event_id(gid, "terminal")
    await bus.request(user_id=uid, generation_id=gid)

    async def consumed() -> bool:
        info = await bus.js.consumer_info("GENERATION", "generation-requested")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually_async(consumed, what="request consumed")
    kinds = await terminal_messages(bus, uid)
    assert kinds == ["generation.cancel_requested", "generation.canceled", "generation.requested"]
    assert await store.stat(f"users/{uid}/generations/{gid}/0.png") is None


async def test_a_running_job_stops(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    # An 8 s 720p clip takes several seconds to encode: long enough to cancel in the middle.
    req = await bus.request(kind="video", width=1280, height=720, duration_s=8.0, aspect_ratio="16:9", cost=10)
    uid, gid = req.data.user_id, req.data.generation_id

    async def encoding() -> bool:
        return any(
            isinstance(e.data, GenerationProgress) and e.data.stage == "encoding" and e.data.progress > 0
            for e in await bus.events(uid)
        )

    await eventually_async(encoding, what="encoding under way")
    await bus.cancel(uid, gid)
    done = await bus.terminal(uid)
    assert isinstance(done.data, GenerationCanceled) and done.id == transition_event_id(gid, "terminal")
    # The worker let go of the job (its slot is free again) without finishing the clip.
    await eventually_async(lambda: _idle(worker), timeout=10, what="job stopped")
    events = await bus.events(uid)
    assert [kind_of(e) for e in events].count("generation.canceled") == 1
    assert "generation.completed" not in [kind_of(e) for e in events]
    assert max(e.data.progress for e in events if isinstance(e.data, GenerationProgress)) < 0.9
    assert await store.stat(f"users/{uid}/generations/{gid}/0.mp4") is None


async def _idle(worker: ServiceProcess) -> bool:
    return await jobs_running(worker) == 0


async def test_a_running_remote_job_cancels_its_prediction(worker: ServiceProcess, bus: Bus, fakes: Fakes) -> None:
    prompt = fakes.script(f"worker replicate slow {uuid.uuid4().hex[:6]}", ["slow"])
    req = await bus.request(model="replicate-solo", prompt=prompt)
    uid, gid = req.data.user_id, req.data.generation_id

    await eventually_async(lambda: fakes.prediction_polled(prompt), what="prediction polled")
    await bus.cancel(uid, gid)
    assert isinstance((await bus.terminal(uid)).data, GenerationCanceled)
    (pid,) = {p for p, pred in fakes.predictions.items() if pred["prompt"] == prompt}
    await eventually_async(lambda: pid in fakes.canceled, what="prediction canceled upstream")


async def test_cancel_after_completion_changes_nothing(worker: ServiceProcess, bus: Bus) -> None:
    req = await bus.request()
    uid, gid = req.data.user_id, req.data.generation_id
    done = await bus.terminal(uid)
    assert isinstance(done.data, GenerationCompleted)
    await bus.cancel(uid, gid)

    async def consumed() -> bool:
        info = await bus.js.consumer_info("GENERATION", "generation-cancel-requested")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually_async(consumed, what="cancel consumed")
    kinds = await terminal_messages(bus, uid)
    assert kinds.count("generation.completed") == 1 and "generation.canceled" not in kinds
