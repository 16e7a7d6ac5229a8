"""A worker killed in the middle of a job: JetStream redelivers it to another worker after the
ack wait, which runs it again; the generation completes exactly once."""

from __future__ import annotations

import hashlib
from pathlib import Path

from genimage_common.events import GenerationCompleted, GenerationProgress, GenerationStarted
from genimage_common.storage import ObjectStore
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus, kind_of
from tests.generation.conftest import start_worker
from tests.polling import eventually_async


async def test_killed_worker_job_is_redelivered_and_completes_once(
    worker: ServiceProcess, worker_env: dict[str, str], worker_logs: Path, bus: Bus, store: ObjectStore
) -> None:
    worker.stop()  # the victim must be the only consumer when the job arrives
    victim = start_worker(worker_env, worker_logs, name="victim")
    try:
        req = await bus.request(kind="video", width=720, height=720, aspect_ratio="1:1", duration_s=5.0, cost=10)
        uid = req.data.user_id

        async def mid_job() -> bool:
            return any(
                isinstance(e.data, GenerationProgress) and e.data.stage == "encoding" for e in await bus.events(uid)
            )

        await eventually_async(mid_job, what="victim encoding")
        assert victim.proc.popen is not None
        victim.proc.popen.kill()  # SIGKILL: no graceful hand-back, no ack
        victim.proc.popen.wait(10)
    finally:
        victim.stop()
        worker.start()
        worker.wait_ready()

    done = await bus.terminal(uid, timeout=90)
    assert isinstance(done.data, GenerationCompleted)
    events = await bus.events(uid)
    assert [kind_of(e) for e in events].count("generation.completed") == 1
    started = [e.data.attempt for e in events if isinstance(e.data, GenerationStarted)]
    assert started == [1, 2]  # the second delivery ran it again
    (out,) = done.data.outputs
    assert hashlib.sha256(await store.get(out.object_key)).hexdigest() == out.sha256
