"""The four services against a PostgreSQL of this module's own, stopped for 30 s while events
flow (issue 10 §3), and the hold-expiry backstop end to end (ADR 22).

During the outage the generation worker renders queued jobs (NATS and S3 are up) and users
registered before it are relayed: billing and gallery cannot write, so they must retry for as
long as the database is away and apply everything once it is back — nothing dead-lettered, each
grant and each charge exactly once, every generation succeeded, no service restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from sqlalchemy import text

from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from genimage_common.streams import BILLING, DLQ, GALLERY, GENERATION, IDENTITY
from genimage_devstack.infra import Endpoints
from genimage_devstack.processes import NatsServer, PostgresServer, free_port
from genimage_devstack.stack import SERVICES, ServiceProcess, start_services
from tests.aio import run_sync
from tests.api import TestUser, signup, wait_terminal
from tests.billing import factories
from tests.billing.test_service import names, stream_events
from tests.generation.fakes import KEYS, Fakes, catalog_toml
from tests.marks import starts_services
from tests.polling import eventually, eventually_async
from tests.session_env import SESSION_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

OUTAGE_S = 30
MIGRATED = ("gateway", "billing", "gallery")


@dataclass
class Stack:
    pg: PostgresServer
    services: dict[str, ServiceProcess]
    fakes: Fakes

    @property
    def database_url(self) -> str:
        return self.pg.url


@pytest.fixture(scope="module")
@starts_services
def stack(infra: Endpoints, private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Own NATS and PostgreSQL (the session's are shared with other tests and never stopped
    here), the session's S3; the four services as processes; fake providers for a job that
    never finishes."""
    # Outside pytest's basetemp: PostgreSQL may run as another user that must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="genimage-outage-"))
    logs = Path(tmp_path_factory.mktemp("outage-logs"))
    pg = PostgresServer(data_dir, port=free_port(), fast=True)
    fakes = Fakes()
    started: list = []
    procs: list[ServiceProcess] = []
    try:
        for component in (pg, fakes):
            component.start()
            started.append(component)
        models = logs / "models.toml"
        models.write_text(catalog_toml(fakes))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **infra.env(),
            "NATS_URL": private_nats.url,
            "DATABASE_URL": pg.url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "INFO",
            **SESSION_ENV,
            **KEYS,
            "GENIMAGE_MODELS": str(models),
            # One slot: a job that never finishes keeps the next one queued (the expiry test).
            "GENERATION_CONCURRENCY": "1",
            "BILLING_SWEEP_INTERVAL_S": "0.5",
            # Production caps the backoff at 30 s; a shorter cap keeps the recovery quick here.
            "TRANSIENT_RETRY_MAX_S": "3",
        }
        settings = CommonSettings(**{**{k.lower(): v for k, v in infra.env().items()}, "nats_url": private_nats.url})
        run_sync(ObjectStore(settings).ensure_bucket())
        for name in MIGRATED:
            subprocess.run([sys.executable, "-m", name, "migrate"], env=env, check=True, capture_output=True)
        procs = start_services(env, {name: free_port() for name in SERVICES}, log_dir=logs)
        yield Stack(pg, {p.name: p for p in procs}, fakes)
    finally:
        for p in reversed(procs):
            p.stop()
        for component in reversed(started):
            component.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture()
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.services["gateway"].url, timeout=30) as client:
        yield client


def generate(api: httpx.Client, user: TestUser, **body: object) -> str:
    r = api.post(
        "/v1/generations", headers=user.auth, json={"kind": "image", "prompt": "a lighthouse", "seed": 7, **body}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def cancel(api: httpx.Client, user: TestUser, generation_id: str) -> int:
    return api.post(f"/v1/generations/{generation_id}/cancel", headers=user.auth).status_code


def credits(api: httpx.Client, user: TestUser) -> dict:
    return api.get("/v1/credits", headers=user.auth).json()


async def rpc_balance(nc: nats.NATS, user_id: uuid.UUID) -> dict:
    reply = await nc.request("rpc.billing.balance", json.dumps({"user_id": str(user_id)}).encode(), timeout=10)
    return json.loads(reply.data)


def transient_redeliveries(service: ServiceProcess, consumer: str = "") -> float:
    body = httpx.get(f"{service.url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("genimage_redeliveries_total{")
        and 'failure="transient"' in line
        and f'consumer="{consumer}' in line
    )


def ready(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_30s_database_outage_loses_nothing_and_dead_letters_nothing(
    stack: Stack, api: httpx.Client, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    users = [signup(api) for _ in range(3)]  # 20 credits each
    pids = {name: s.proc.pid for name, s in stack.services.items()}

    # Jobs wait while the worker is away, so that they complete during the outage.
    stack.services["generation"].stop()
    gens = {u.id: [generate(api, u), generate(api, u, width=320, height=256)] for u in users}
    assert all(credits(api, u) == {"available": 10, "reserved": 10} for u in users)

    stack.pg.stop()
    outage_started = time.monotonic()
    try:
        # Users whose registration is relayed during the outage: billing owes them 20 credits.
        late = [uuid.uuid4() for _ in range(3)]
        for user_id in late:
            await factories.publish(js, factories.registered(user_id), stream=IDENTITY)
        generation = stack.services["generation"]
        generation.start()
        generation.wait_ready()

        async def all_completed() -> bool:
            events = await stream_events(nc, GENERATION, "generation.completed.*")
            return len(events) == 6

        await eventually_async(all_completed, timeout=OUTAGE_S - 5, what="every job completed during the outage")
        billing, gallery = stack.services["billing"], stack.services["gallery"]
        # Billing and gallery keep trying, and say they are not ready meanwhile.
        eventually(
            lambda: (
                transient_redeliveries(billing, "billing-generation-completed")
                and transient_redeliveries(billing, "billing-user-registered")
                and transient_redeliveries(gallery)
            ),
            timeout=OUTAGE_S - 5,
            what="transient redeliveries counted",
        )
        assert not ready(billing) and not ready(gallery)
        assert (await js.stream_info(DLQ)).state.messages == 0
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))  # the outage lasts 30 s
    finally:
        stack.pg.start()

    # Every generation succeeded and was charged once; every user got the signup grant once.
    for user in users:
        for gid in gens[user.id]:
            assert wait_terminal(api, user, gid, timeout=90)["status"] == "succeeded"
        eventually(lambda u=user: credits(api, u) == {"available": 10, "reserved": 0}, timeout=60, what="charged")
    for user_id in late:
        await eventually_async(
            lambda u=user_id: _eq(rpc_balance(nc, u), {"available": 20, "reserved": 0}), what="late grant"
        )

    async def relayed() -> bool:
        billing_events = await stream_events(nc, BILLING, "billing.>")
        return sum(k == "credits_committed" for k in names(billing_events)) >= 6

    await eventually_async(relayed, timeout=30, what="commit events relayed")
    billing_events = await stream_events(nc, BILLING, "billing.>")
    grants = [e["data"]["user_id"] for e in billing_events if e["type"].endswith("credits_granted.v1")]
    assert sorted(grants) == sorted([u.id for u in users] + [str(u) for u in late])
    committed = [e["data"]["generation_id"] for e in billing_events if e["type"].endswith("credits_committed.v1")]
    assert sorted(committed) == sorted(g for gs in gens.values() for g in gs)
    engine = make_engine(stack.database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            per_kind = dict(
                (
                    await session.execute(
                        text("SELECT kind, count(*) FROM billing.transfers WHERE user_id = ANY(:u) GROUP BY kind"),
                        {"u": [uuid.UUID(u.id) for u in users] + late},
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert per_kind == {"grant": 6, "reserve": 6, "commit": 6}

    # Nothing went to the DLQ, no consumer gives up after a bounded count server-side, and every
    # service is ready again without having been restarted.
    assert (await js.stream_info(DLQ)).state.messages == 0
    for stream in (IDENTITY, GENERATION, BILLING, GALLERY):
        for consumer in await js.consumers_info(stream):
            if not consumer.config.durable_name:
                continue  # an ordered consumer reading the stream (SSE, this test)
            assert (consumer.config.max_deliver or -1) <= 0, (stream, consumer.name, consumer.config.max_deliver)
    for name, service in stack.services.items():
        eventually(lambda s=service: ready(s), timeout=30, what=f"{name} ready again")
        if name != "generation":
            assert service.proc.pid == pids[name] and service.proc.popen.poll() is None


async def test_a_hold_expiring_while_its_generation_is_queued_fails_it_and_refunds_once(
    stack: Stack, api: httpx.Client, nc: nats.NATS
) -> None:
    user = signup(api)
    # The only slot runs a prediction that never finishes...
    slow = stack.fakes.script(f"outage slow {uuid.uuid4().hex[:6]}", ["slow"])
    busy = generate(api, user, model="replicate-solo", prompt=slow)
    eventually(
        lambda: api.get(f"/v1/generations/{busy}", headers=user.auth).json().get("status") == "running",
        timeout=30,
        what="the slot is busy",
    )
    # ... so this one stays queued while its hold runs out (moved to the past: time passes).
    queued = generate(api, user)
    engine = make_engine(stack.database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine).begin() as session:
            # A hold's terms are immutable (a trigger); time passing is what this stands for.
            await session.execute(text("SET LOCAL session_replication_role = replica"))
            await session.execute(
                text("UPDATE billing.holds SET expires_at = now() - interval '1 second' WHERE generation_id = :g"),
                {"g": uuid.UUID(queued)},
            )
        done = wait_terminal(api, user, queued, timeout=30)
        assert done["status"] == "failed" and done["error"]["code"] == "expired", done
        assert done["started_at"] is None and done["outputs"] == []
        eventually(lambda: credits(api, user) == {"available": 15, "reserved": 5}, what="refunded")

        # The slot frees up; the queued job is delivered, finds its outcome and renders nothing.
        assert cancel(api, user, busy) == 202
        assert wait_terminal(api, user, busy)["status"] == "canceled"
        eventually(lambda: credits(api, user) == {"available": 20, "reserved": 0}, what="all refunded")

        async def queue_empty() -> bool:
            info = await nc.jetstream().consumer_info(GENERATION, "generation-requested")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually_async(queue_empty, what="queued job consumed")
        events = await stream_events(nc, GENERATION, f"generation.*.{user.id}")
        mine = [e for e in events if e["subject"] == queued]
        assert names(mine) == ["requested", "failed"]
        async with make_sessionmaker(engine)() as session:
            transfers = (
                await session.execute(
                    text("SELECT kind FROM billing.transfers WHERE generation_id = :g ORDER BY id"),
                    {"g": uuid.UUID(queued)},
                )
            ).scalars()
            # Expired once; the late `failed` found the hold settled and changed nothing.
            assert list(transfers) == ["reserve", "expire"]
    finally:
        await engine.dispose()
    refunds = [e["data"] for e in await stream_events(nc, BILLING, f"billing.credits_refunded.{user.id}")]
    assert [(r["generation_id"], r["reason"]) for r in refunds if r["generation_id"] == queued] == [(queued, "expired")]
    assert (await nc.jetstream().stream_info(DLQ)).state.messages == 0


async def _eq(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected
