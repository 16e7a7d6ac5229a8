"""Object storage away while a job waits: the worker retries it for as long as the outage lasts
— past GENERATION_MAX_DELIVERIES — and the job completes once storage is back, instead of
failing with ``internal_error`` and going to the DLQ (ADR 22)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from genimage_common.events import GenerationCompleted, GenerationStarted
from genimage_devstack.infra import Endpoints
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus
from tests.generation.conftest import start_worker
from tests.polling import eventually_async

pytestmark = pytest.mark.timeout(240)


class Cuttable:
    """A TCP proxy to the S3 store that can be cut: while cut, every connection is reset at
    once and those open are closed, as when the store is down. The port stays bound the
    whole time, so that no other process on this busy machine can take it meanwhile."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._cut = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._cut.clear()

    def down(self) -> None:
        self._cut.set()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _reset(conn)

    def close(self) -> None:
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _reset(conn: socket.socket) -> None:
    """Close with RST (linger 0): the peer sees "connection reset", not a clean end."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.fixture()
def cuttable_s3(infra: Endpoints) -> Iterator[Cuttable]:
    parts = urlsplit(infra.s3_endpoint)
    proxy = Cuttable((parts.hostname or "127.0.0.1", parts.port or 80))
    try:
        yield proxy
    finally:
        proxy.close()


async def test_a_job_waits_out_a_storage_outage_and_completes(
    worker: ServiceProcess, worker_env: dict[str, str], worker_logs: Path, bus: Bus, cuttable_s3: Cuttable
) -> None:
    env = {
        **worker_env,
        "S3_ENDPOINT": cuttable_s3.url,
        "TRANSIENT_RETRY_BASE_S": "0.2",
        "TRANSIENT_RETRY_MAX_S": "1",
    }
    max_deliveries = int(env["GENERATION_MAX_DELIVERIES"])
    worker.stop()  # the only consumer is the one behind the cuttable store
    cut_off = start_worker(env, worker_logs, name="storage-outage")
    try:
        before = (await bus.js.consumer_info("GENERATION", "generation-requested")).delivered.consumer_seq
        cuttable_s3.down()
        req = await bus.request()
        uid = req.data.user_id

        async def delivered_past_the_bound() -> bool:
            # Only this job is in flight: the consumer's deliveries since are its deliveries.
            info = await bus.js.consumer_info("GENERATION", "generation-requested")
            return info.delivered.consumer_seq - before > max_deliveries

        await eventually_async(delivered_past_the_bound, timeout=120, interval=0.5, what="redelivered past the bound")
        assert not [e for e in await bus.events(uid) if e.data.name != "generation.requested"]
        assert await bus.dead_letters(req.nats_subject) == []
        cuttable_s3.up()

        done = await bus.terminal(uid, timeout=60)
        assert isinstance(done.data, GenerationCompleted), done
        started = [e.data for e in await bus.events(uid) if isinstance(e.data, GenerationStarted)]
        assert len(started) == 1 and started[0].attempt > max_deliveries
        assert await bus.dead_letters(req.nats_subject) == []
    finally:
        cut_off.stop()
        worker.start()
        worker.wait_ready()
