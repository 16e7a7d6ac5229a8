"""Billing: reserve + commit pairs per second at 1, 8 and 32 concurrent clients, beside the raw
rate of asyncpg running a single-row ``UPDATE ... RETURNING`` on the same database in the same run.

Three figures per concurrency level, each measured for ``BENCH_DURATION_S`` seconds (default 5):

- ``raw``: asyncpg, one connection per client, ``UPDATE bench.counters SET n = n + 1 WHERE id = $1
  RETURNING n`` on the client's own row (autocommit) — what PostgreSQL does at best for one
  single-row write per round trip on this machine;
- ``ledger``: the ledger in-process, as the service runs it: a reserve transaction (hold, transfer
  and entries, outbox) then a commit transaction (inbox claim, hold, transfer and entries,
  outbox), each client on its own funded user, with the outbox relay publishing to JetStream;
- ``service``: the billing service as a process: ``rpc.billing.reserve`` over NATS, then a
  ``generation.completed`` published to JetStream; the pairs count when their commit is in the
  database (the figure is pairs committed per second of wall time; the latency is the client's:
  the reserve RPC plus the publish of the completion).

    .venv/bin/python bench/billing.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
from prometheus_client import CollectorRegistry

# Run as ``python bench/billing.py``: this file's folder must not shadow the ``billing`` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench.harness import infrastructure, summary_ms, write_results  # noqa: E402
from billing import consumers, ledger  # noqa: E402
from billing.deps import Deps  # noqa: E402
from billing.models import outbox  # noqa: E402
from billing.settings import BillingSettings  # noqa: E402
from genimage_common.database import make_engine, make_sessionmaker  # noqa: E402
from genimage_common.events import GenerationCompleted, Output, Timings, make_event  # noqa: E402
from genimage_common.ids import image_id_for, new_id, transition_event_id  # noqa: E402
from genimage_common.outbox import OutboxRelay  # noqa: E402
from genimage_common.pricing import Pricing  # noqa: E402
from genimage_common.streams import GENERATION  # noqa: E402
from genimage_devstack.processes import free_port  # noqa: E402
from genimage_devstack.stack import ServiceProcess  # noqa: E402

LEVELS = (1, 8, 32)
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "5"))
WARMUP_S = 0.5
AMOUNT = 5
TTL = timedelta(minutes=15)


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def completed(user_id: uuid.UUID, generation_id: uuid.UUID) -> Any:
    key = f"users/{user_id}/generations/{generation_id}/0"
    output = Output(
        image_id=image_id_for(generation_id, 0),
        index=0,
        object_key=f"{key}.png",
        thumbnail_key=f"{key}.thumb.webp",
        content_type="image/png",
        width=512,
        height=512,
        bytes=1000,
        sha256="0" * 64,
    )
    data = GenerationCompleted(
        user_id=user_id,
        generation_id=generation_id,
        outputs=[output],
        provider="local",
        model="local",
        seed=1,
        timings=Timings(queue_ms=1, run_ms=1),
    )
    return make_event(
        data,
        source="genimage/generation",
        subject=generation_id,
        event_id=transition_event_id(generation_id, "terminal"),
    )


async def run_clients(clients: int, duration: float, one: Any) -> tuple[int, float, list[float]]:
    """``clients`` loops calling ``one(i)`` until the deadline: (operations, elapsed, latencies)."""
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + duration

    async def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(loop(i) for i in range(clients)))
    return len(latencies), time.perf_counter() - start, latencies


# --- raw asyncpg --------------------------------------------------------------------------


async def raw(database_url: str, clients: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn(database_url), min_size=clients, max_size=clients)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
            await conn.execute("CREATE TABLE IF NOT EXISTS bench.counters (id int PRIMARY KEY, n bigint NOT NULL)")
            await conn.execute(
                "INSERT INTO bench.counters SELECT g, 0 FROM generate_series(0, 63) g ON CONFLICT DO NOTHING"
            )

        async def one(i: int) -> None:
            async with pool.acquire() as conn:
                await conn.fetchval("UPDATE bench.counters SET n = n + 1 WHERE id = $1 RETURNING n", i)

        await run_clients(clients, WARMUP_S, one)
        ops, elapsed, latencies = await run_clients(clients, DURATION_S, one)
    finally:
        await pool.close()
    return {"per_s": round(ops / elapsed, 1), "latency": summary_ms(latencies)}


# --- the ledger in-process ------------------------------------------------------------------


async def funded_users(deps: Deps, n: int) -> list[uuid.UUID]:
    users = [new_id() for _ in range(n)]
    async with deps.uow.transaction() as session:
        for user in users:
            await ledger.grant(session, user_id=user, amount=ledger.MAX_AMOUNT, reason="admin", reference=str(user))
    return users


async def in_process(deps: Deps, clients: int) -> dict[str, Any]:
    users = await funded_users(deps, clients)

    async def one(i: int) -> None:
        gid = new_id()
        async with deps.uow.transaction() as session:
            await ledger.reserve(session, user_id=users[i], generation_id=gid, amount=AMOUNT, ttl=TTL)
        outcome = await consumers.apply_completed(deps, completed(users[i], gid))
        assert outcome == ledger.Outcome.COMMITTED, outcome

    await run_clients(clients, WARMUP_S, one)
    pairs, elapsed, latencies = await run_clients(clients, DURATION_S, one)
    return {"pairs_per_s": round(pairs / elapsed, 1), "pair_latency": summary_ms(latencies)}


# --- the billing service process ------------------------------------------------------------


async def through_service(nats_url: str, deps: Deps, pool: asyncpg.Pool, clients: int) -> dict[str, Any]:
    users = await funded_users(deps, clients)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    reserved: list[uuid.UUID] = []

    async def one(i: int) -> None:
        gid = new_id()
        body = {"generation_id": str(gid), "user_id": str(users[i]), "amount": AMOUNT, "units": 1}
        reply = json.loads((await nc.request("rpc.billing.reserve", json.dumps(body).encode(), timeout=30)).data)
        assert "hold" in reply, reply
        event = completed(users[i], gid)
        await js.publish(
            event.nats_subject,
            event.model_dump_json().encode(),
            stream=GENERATION,
            headers={"Nats-Msg-Id": str(event.id)},
        )
        reserved.append(gid)

    try:
        start = time.perf_counter()
        _, _, latencies = await run_clients(clients, DURATION_S, one)
        deadline = time.perf_counter() + 300
        while True:  # the commits trail the publishes: count pairs when they are committed
            pending = await pool.fetchval(
                "SELECT count(*) FROM billing.holds WHERE user_id = ANY($1::uuid[]) AND status = 'pending'", users
            )
            if pending == 0:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{pending} holds still pending: the service did not commit them")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    return {"pairs_per_s": round(len(reserved) / elapsed, 1), "reserve_and_publish_latency": summary_ms(latencies)}


async def drain_outbox(pool: asyncpg.Pool, timeout: float = 300) -> None:
    """Let the relay publish its backlog: it is then idle, and stopping it cancels no publish."""
    deadline = time.perf_counter() + timeout
    while await pool.fetchval("SELECT count(*) FROM billing.outbox WHERE published_at IS NULL"):
        if time.perf_counter() > deadline:
            raise TimeoutError("the outbox relay did not drain its backlog")
        await asyncio.sleep(0.1)


async def main(database_url: str, nats_url: str, env: dict[str, str], logs: Path) -> dict[str, Any]:
    engine = make_engine(database_url, pool_size=max(LEVELS) + 4)
    sessions = make_sessionmaker(engine)
    nc = await nats.connect(nats_url)
    relay = OutboxRelay(sessions, outbox, nc.jetstream(), service="billing", registry=CollectorRegistry())
    deps = Deps(settings=BillingSettings(), pricing=Pricing(), sessions=sessions, relay=relay)
    relay.start()
    pool = await asyncpg.create_pool(dsn(database_url), min_size=1, max_size=2)
    results: dict[str, Any] = {"duration_s": DURATION_S, "amount": AMOUNT, "levels": {}}
    try:
        for clients in LEVELS:
            results["levels"][str(clients)] = {
                "raw_update": await raw(database_url, clients),
                "ledger": await in_process(deps, clients),
            }
        await drain_outbox(pool)
        await relay.stop()
        service = ServiceProcess("billing", free_port(), env, log_path=logs / "billing.log")
        service.start()
        try:
            await asyncio.to_thread(service.wait_ready)
            for clients in LEVELS:
                results["levels"][str(clients)]["service"] = await through_service(nats_url, deps, pool, clients)
        finally:
            await asyncio.to_thread(service.stop)
    finally:
        await pool.close()
        await nc.close()
        await engine.dispose()
    for level in results["levels"].values():
        level["raw_per_ledger_pair"] = round(level["raw_update"]["per_s"] / level["ledger"]["pairs_per_s"], 1)
        level["raw_per_service_pair"] = round(level["raw_update"]["per_s"] / level["service"]["pairs_per_s"], 1)
    return results


def report(results: dict[str, Any]) -> None:
    print(f"\nbilling: reserve+commit pairs/s vs raw single-row UPDATE/s ({DURATION_S:.0f} s per figure)")
    columns = ("clients", "raw UPDATE/s", "ledger pairs/s", "ratio", "service pairs/s", "ratio")
    print("  ".join(f"{c:>15}" for c in columns))
    for clients, level in results["levels"].items():
        row = (
            clients,
            level["raw_update"]["per_s"],
            level["ledger"]["pairs_per_s"],
            level["raw_per_ledger_pair"],
            level["service"]["pairs_per_s"],
            level["raw_per_service_pair"],
        )
        print("  ".join(f"{v:>15}" for v in row))


if __name__ == "__main__":
    with infrastructure() as (endpoints, env), tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        env = {**env, "LOG_LEVEL": "WARNING"}
        results = asyncio.run(main(endpoints.database_url, endpoints.nats_url, env, Path(tmp)))
        write_results("billing", results)
        report(results)
