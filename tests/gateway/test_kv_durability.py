"""The gateway's NATS KV buckets (rate limits, in-flight slots) are replicated like the
streams (``STREAM_REPLICAS``), and an unreachable KV makes ``POST /v1/generations`` a 503
problem, not a 500."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from genimage_devstack.processes import LOOPBACK, Proc, free_port, wait_until
from genimage_devstack.stack import ServiceProcess, launch
from tests.aio import run_sync
from tests.api import assert_problem, signup, wait_terminal
from tests.gateway.flows import SMALL
from tests.marks import starts_infra
from tests.polling import eventually_async

pytestmark = pytest.mark.timeout(180)


class NatsCluster:
    """Three JetStream servers routed together on loopback, each stopped by its PID."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
        self.ports = [free_port() for _ in range(3)]
        self.monitors = [free_port() for _ in range(3)]
        routes_ports = [free_port() for _ in range(3)]
        routes = ",".join(f"nats://{LOOPBACK}:{p}" for p in routes_ports)
        self.procs = [
            Proc(
                f"nats-{i}",
                [
                    binary,
                    "-a",
                    LOOPBACK,
                    "-p",
                    str(self.ports[i]),
                    "-m",
                    str(self.monitors[i]),
                    "-js",
                    "-sd",
                    str(root / f"n{i}"),
                    "--server_name",
                    f"n{i}",
                    "--cluster_name",
                    "genimage-test",
                    "--cluster",
                    f"nats://{LOOPBACK}:{routes_ports[i]}",
                    "--routes",
                    routes,
                ],
                log_path=root / f"nats-{i}.log",
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        # One seed is enough: the client learns the other servers from it.
        return f"nats://{LOOPBACK}:{self.ports[0]}"

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for p, monitor in zip(self.procs, self.monitors, strict=True):
            wait_until(
                lambda m=monitor: (
                    httpx.get(f"http://{LOOPBACK}:{m}/healthz?js-enabled-only=true", timeout=1).status_code == 200
                ),
                timeout=60,
                what=p.name,
                proc=p.popen,
            )

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture()
@starts_infra
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


async def _replicas(url: str, buckets: list[str]) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {b: (await js.stream_info(f"KV_{b}")).config.num_replicas for b in buckets}
    finally:
        await nc.close()


async def _create_r1(url: str, bucket: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()

        async def created() -> bool:
            try:
                await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE))
            except Exception:  # the meta leader is elected a moment after the servers are up
                return False
            return True

        await eventually_async(created, timeout=20, interval=0.2, what=f"bucket {bucket} created")
    finally:
        await nc.close()


@pytest.mark.e2e  # starts a gateway itself
def test_kv_buckets_follow_stream_replicas(cluster: NatsCluster, stack_env: dict[str, str], tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    buckets = [f"rl_{suffix}", f"inflight_{suffix}"]
    # A bucket left by an earlier release with one replica is brought to the setting too.
    run_sync(_create_r1(cluster.url, buckets[1]))
    env = {
        **stack_env,
        "NATS_URL": cluster.url,
        "STREAM_REPLICAS": "3",
        "GATEWAY_BACKGROUND_WORKERS": "false",
        "GATEWAY_RATELIMIT_BUCKET": buckets[0],
        "GATEWAY_INFLIGHT_BUCKET": buckets[1],
    }
    (gateway,) = launch([ServiceProcess("gateway", free_port(), env, log_path=tmp_path / "gateway.log")])
    try:
        assert run_sync(_replicas(cluster.url, buckets)) == {buckets[0]: 3, buckets[1]: 3}
        assert run_sync(_stream_replicas(cluster.url)) == 3
    finally:
        gateway.stop()


async def _stream_replicas(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info("GENERATION")).config.num_replicas
    finally:
        await nc.close()


async def _delete_bucket(url: str, bucket: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_key_value(bucket)
    finally:
        await nc.close()


def test_generation_is_503_when_kv_is_gone(stack_env: dict[str, str], services: dict, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack_env,
        "GATEWAY_BACKGROUND_WORKERS": "false",
        "GATEWAY_RATELIMIT_BUCKET": f"rl_{suffix}",
        "GATEWAY_INFLIGHT_BUCKET": f"inflight_{suffix}",
    }
    (gateway,) = launch([ServiceProcess("gateway", free_port(), env, log_path=tmp_path / "gateway.log")])
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as api:
            user = signup(api)
            r = api.post("/v1/generations", headers=user.auth, json={"prompt": "before", **SMALL})
            assert r.status_code == 202, r.text
            wait_terminal(api, user, r.json()["id"])

            run_sync(_delete_bucket(stack_env["NATS_URL"], f"inflight_{suffix}"))
            run_sync(_delete_bucket(stack_env["NATS_URL"], f"rl_{suffix}"))
            before = api.get("/v1/credits", headers=user.auth).json()
            r = api.post("/v1/generations", headers=user.auth, json={"prompt": "after", **SMALL})
            problem = assert_problem(r, 503, "service_unavailable")
            assert "Retry-After" in r.headers, r.headers
            assert problem["detail"]
            # Refused before anything was reserved.
            assert api.get("/v1/credits", headers=user.auth).json() == before
            # Reads do not need the in-flight slots; rate limits fail open (ADR 0041).
            assert api.get("/v1/me", headers=user.auth).status_code == 200
    finally:
        gateway.stop()
