"""A job redelivered while this worker still runs it (its in-progress acks did not arrive in
time, e.g. while NATS restarted or the process stalled) is attached to the running job, not
run a second time: one render, one ``completed``, no progress after it, and both deliveries
acked (nothing left pending on the consumer)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from generation.intake import DURABLE
from genimage_common.events import GenerationCompleted, GenerationProgress, GenerationStarted
from genimage_common.storage import ObjectStore
from genimage_common.streams import GENERATION
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus, kind_of
from tests.generation.conftest import ACK_WAIT_S, start_worker
from tests.polling import eventually_async

ATTACHED = "attached to the running job"


@pytest.mark.timeout(180)
async def test_redelivery_while_running_attaches_to_the_running_job(
    worker: ServiceProcess, worker_env: dict[str, str], worker_logs: Path, bus: Bus, store: ObjectStore
) -> None:
    worker.stop()  # the stalled worker must be the only consumer: the redelivery has to come back to it
    stalled = start_worker(worker_env, worker_logs, name="attach")
    log_path = worker_logs / "attach.log"
    try:
        # A long render, so the job is still running when the worker resumes and fetches again.
        req = await bus.request(kind="video", width=720, height=720, aspect_ratio="1:1", duration_s=5.0, cost=10)
        uid = req.data.user_id

        async def encoding() -> bool:
            return any(
                isinstance(e.data, GenerationProgress) and e.data.stage == "encoding" for e in await bus.events(uid)
            )

        await eventually_async(encoding, timeout=60, what="job encoding")
        assert stalled.proc.popen is not None
        pid = stalled.proc.popen.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            # The fault itself, not a wait for a condition: no in-progress ack for longer than
            # ack_wait, so JetStream puts the message up for redelivery; the worker's next fetch
            # (as soon as it resumes, a slot is free) gets it while the job still runs.
            await asyncio.sleep(ACK_WAIT_S + 1.5)
        finally:
            os.kill(pid, signal.SIGCONT)

        done = await bus.terminal(uid, timeout=90)
        # The scenario did happen: the second delivery reached this worker and was attached.
        await eventually_async(
            lambda: ATTACHED in log_path.read_text(errors="replace"), timeout=10, what="redelivery attached"
        )
    finally:
        stalled.stop()
        worker.start()
        worker.wait_ready()

    assert isinstance(done.data, GenerationCompleted)
    events = await bus.events(uid)
    kinds = [kind_of(e) for e in events]
    assert kinds.count("generation.completed") == 1
    assert [e.data.attempt for e in events if isinstance(e.data, GenerationStarted)] == [1]  # one render
    after = kinds[kinds.index("generation.completed") + 1 :]
    assert "generation.progress" not in after, kinds
    (out,) = done.data.outputs
    assert out.sha256  # uploaded once, under the hash the event carries
    assert len(await store.get(out.object_key)) > 0

    async def settled() -> bool:
        info = await bus.js.consumer_info(GENERATION, DURABLE)
        return info.num_ack_pending == 0 and info.num_pending == 0

    # Both deliveries acked: nothing comes back after ack_wait.
    await eventually_async(settled, timeout=ACK_WAIT_S * 3, what="no job message pending on the consumer")
