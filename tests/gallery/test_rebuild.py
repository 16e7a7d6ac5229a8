"""``python -m gallery rebuild`` against the running services: after a mixed workload the rebuilt
model equals the live one, readers are served throughout, and the services carry on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Self

import asyncpg
import httpx
import nats
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery.consumers import CONSUMERS
from gallery.models import SCHEMA, outbox
from gallery.rebuild import create_schema
from genimage_common import events as ev
from genimage_common.database import make_engine, make_sessionmaker
from genimage_devstack.stack import ServiceProcess
from tests.api import TestUser, signup, wait_terminal
from tests.polling import eventually, eventually_async

from .conftest import HEAD, Model
from .flows import generate, image_ids, publish

pytestmark = pytest.mark.e2e


async def quiescent(engine: AsyncEngine, nats_url: str) -> bool:
    """Every event is projected and every gallery event relayed."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream, durable, _ in CONSUMERS:
            info = await js.consumer_info(stream, durable)
            if info.num_pending or info.num_ack_pending:
                return False
    finally:
        await nc.close()
    async with engine.connect() as conn:
        pending = await conn.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None)))
    return pending == 0


async def settled(engine: AsyncEngine, nats_url: str, timeout: float = 30) -> None:
    """Wait until nothing is left to project or relay."""
    await eventually_async(lambda: quiescent(engine, nats_url), timeout=timeout, what="the projection settled")


def mixed_workload(api: httpx.Client, stack_env: dict[str, str]) -> tuple[TestUser, TestUser, dict[str, str]]:
    a, b = signup(api), signup(api)
    i1, i2 = (img["id"] for img in generate(api, a, "a lighthouse in a storm", n=2))
    (i3,) = (img["id"] for img in generate(api, a, "a harbour at dawn"))
    j1, j2 = (img["id"] for img in generate(api, b, "a quiet forest", n=2))
    calls = [
        ("PUT", f"/v1/images/{i1}/favorite"),
        ("PUT", f"/v1/images/{i2}/favorite"),
        ("DELETE", f"/v1/images/{i2}/favorite"),
        ("PUT", f"/v1/images/{i1}/publish"),
        ("DELETE", f"/v1/images/{i2}"),
        ("POST", f"/v1/images/{i2}/restore"),
        ("DELETE", f"/v1/images/{i3}"),
    ]
    for method, path in calls:
        assert api.request(method, path, headers=a.auth).status_code == 200, path
    b1 = api.post("/v1/boards", headers=a.auth, json={"name": "Storms"}).json()["id"]
    b2 = api.post("/v1/boards", headers=a.auth, json={"name": "Old"}).json()["id"]
    for method, path, body in [
        ("PATCH", f"/v1/boards/{b1}", {"name": "Storms at sea"}),
        ("PUT", f"/v1/boards/{b1}/images/{i1}", None),
        ("PUT", f"/v1/boards/{b1}/images/{i2}", None),
        ("PUT", f"/v1/boards/{b2}/images/{i1}", None),
        ("DELETE", f"/v1/boards/{b1}/images/{i2}", None),
        ("DELETE", f"/v1/boards/{b2}", None),
    ]:
        assert api.request(method, path, headers=a.auth, json=body).status_code in (200, 204), path
    assert api.put(f"/v1/images/{j1}/favorite", headers=b.auth).status_code == 200
    assert api.put(f"/v1/images/{j2}/publish", headers=b.auth).status_code == 200
    # A purged image (the trash retention is 30 days: its event is published as the purger would).
    purged = ev.make_event(
        ev.ImageDeleted(user_id=uuid.UUID(b.id), image_id=uuid.UUID(j2), object_keys=[]),
        source="tests",
        subject=j2,
    )
    publish(stack_env["NATS_URL"], purged)
    eventually(lambda: image_ids(api, b) == [j1], what="purge projected")
    wait_charged(api, a, 15)
    wait_charged(api, b, 10)
    return a, b, {"i1": i1, "i2": i2, "i3": i3, "j1": j1, "b1": b1}


def wait_charged(api: httpx.Client, user: TestUser, credits: int) -> None:
    """Billing commits after the outputs are delivered; its event reaches the gallery later."""
    spent = lambda: api.get("/v1/stats", headers=user.auth).json()["credits_spent"] == credits  # noqa: E731
    eventually(spent, what=f"{credits} credits spent")


class UserLoop:
    """Repeats ``step`` as ``user`` on another thread, from entering the block until leaving it."""

    def __init__(self, base_url: str, user: TestUser) -> None:
        self.base_url, self.user = base_url, user
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self, client: httpx.Client) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                self.step(client)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Readers(UserLoop):
    """Reads a user's gallery in a loop, recording every answer."""

    def __init__(self, base_url: str, user: TestUser, expected: set[str]) -> None:
        super().__init__(base_url, user)
        self.expected = expected
        self.answers: list[tuple[int, bool]] = []

    def step(self, client: httpx.Client) -> None:
        r = client.get("/v1/images", headers=self.user.auth, params={"limit": 100})
        right = r.status_code == 200 and {i["id"] for i in r.json()["items"]} == self.expected
        self.answers.append((r.status_code, right))


async def rebuild(stack_env: dict[str, str], *args: str) -> dict:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gallery", "rebuild", *args],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


async def settled_workload(
    api: httpx.Client, stack_env: dict[str, str], engine: AsyncEngine
) -> tuple[TestUser, TestUser, dict[str, str], list[uuid.UUID], Model]:
    """The mixed workload, projected and relayed to the end; its users and the live read model."""
    a, b, ids = await asyncio.to_thread(mixed_workload, api, stack_env)
    await settled(engine, stack_env["NATS_URL"])
    return a, b, ids, [uuid.UUID(a.id), uuid.UUID(b.id)], Model(SCHEMA, make_sessionmaker(engine))


async def test_rebuilt_model_equals_the_live_one(
    api: httpx.Client, services: dict[str, ServiceProcess], stack_env: dict[str, str], gallery_engine: AsyncEngine
) -> None:
    a, b, ids, users, live = await settled_workload(api, stack_env, gallery_engine)
    before = await live.snapshot(user_ids=users)
    assert len(before["images"]) == 4 and len(before["boards"]) == 2 and len(before["purged_images"]) == 1
    processed_before = await live.processed()

    with Readers(services["gateway"].url, a, {ids["i1"], ids["i2"]}) as readers:
        report = await rebuild(stack_env, "--keep-previous")
        answers_during = len(readers.answers)
    assert report["previous_schema"].startswith("gallery_prev_")
    assert report["applied"]["GENERATION"] > 0 and report["applied"]["GALLERY"] > 0

    try:
        after = await live.snapshot(user_ids=users)  # `gallery` is the rebuilt schema now
        assert after == before, Model.differences(before, after)
        assert processed_before <= await live.processed()
        assert answers_during > 0
        assert all(status == 200 and right for status, right in readers.answers), readers.answers[-5:]
    finally:
        async with gallery_engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{report["previous_schema"]}" CASCADE')

    # The services carry on with the new schema: commands, and events projected from the streams.
    await asyncio.to_thread(carry_on, api, a, b, ids)


class Writers(UserLoop):
    """Changes a user's gallery in a loop while a generation runs."""

    def __init__(self, base_url: str, user: TestUser, image: str) -> None:
        super().__init__(base_url, user)
        self.image = image
        self.statuses: list[int] = []
        self.favorite = False
        self.boards = 0

    def step(self, client: httpx.Client) -> None:
        method = "DELETE" if self.favorite else "PUT"
        r = client.request(method, f"/v1/images/{self.image}/favorite", headers=self.user.auth)
        self.statuses.append(r.status_code)
        if r.status_code == 200:
            self.favorite = r.json()["favorite"]
        r = client.post("/v1/boards", headers=self.user.auth, json={"name": f"w{self.boards}"})
        self.statuses.append(r.status_code)
        self.boards += r.status_code == 201


async def test_writes_during_a_rebuild_are_neither_lost_nor_doubled(
    api: httpx.Client, services: dict[str, ServiceProcess], stack_env: dict[str, str], gallery_engine: AsyncEngine
) -> None:
    a, b, ids, users, live = await settled_workload(api, stack_env, gallery_engine)
    body = {"prompt": "during the swap", "width": 64, "height": 64, "n": 2}
    # Its events are projected by the consumers while the rebuild runs.
    created = await asyncio.to_thread(api.post, "/v1/generations", headers=b.auth, json=body)
    running = created.json()["id"]
    gateway = services["gateway"].url
    with Readers(gateway, a, {ids["i1"], ids["i2"]}) as readers, Writers(gateway, a, ids["i2"]) as writers:
        await rebuild(stack_env)
    assert writers.statuses and set(writers.statuses) <= {200, 201}, writers.statuses
    assert readers.answers and all(status == 200 and right for status, right in readers.answers)
    assert (await asyncio.to_thread(wait_terminal, api, b, running))["status"] == "succeeded"
    await asyncio.to_thread(wait_charged, api, b, 20)
    await settled(gallery_engine, stack_env["NATS_URL"])

    live_after = await live.snapshot(user_ids=users)
    assert len(live_after["boards"]) == 2 + writers.boards
    i2 = await asyncio.to_thread(api.get, f"/v1/images/{ids['i2']}", headers=a.auth)
    assert i2.json()["favorite"] is writers.favorite
    # A second rebuild, from the streams alone, finds exactly what the live model holds now.
    await rebuild(stack_env)
    rebuilt = await live.snapshot(user_ids=users)
    assert rebuilt == live_after, Model.differences(live_after, rebuilt)


def carry_on(api: httpx.Client, a: TestUser, b: TestUser, ids: dict[str, str]) -> None:
    assert api.put(f"/v1/images/{ids['i2']}/favorite", headers=a.auth).json()["favorite"] is True
    assert set(image_ids(api, a, favorite="true")) == {ids["i1"], ids["i2"]}
    new = generate(api, b, "after the rebuild")
    assert image_ids(api, b) == [new[0]["id"], ids["j1"]]


def _dsn(url: str, database: str | None = None) -> str:
    base, _, current = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")
    return f"{base}/{database or current}"


async def test_a_rebuild_creates_exactly_the_migrated_schema(stack_env: dict[str, str]) -> None:
    """The fresh schema of a rebuild (from models.py) is the one Alembic's migrations build."""
    database = f"gallery_migrations_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(stack_env["DATABASE_URL"], "postgres"))
    await admin.execute(f'CREATE DATABASE "{database}"')
    url = stack_env["DATABASE_URL"].rpartition("/")[0] + f"/{database}"
    try:
        migrated = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gallery", "migrate"], env={**os.environ, "DATABASE_URL": url}
        )
        assert migrated.returncode == 0
        engine = make_engine(url, pool_size=1)
        try:
            await create_schema(engine, "gallery_fresh", HEAD or "")
        finally:
            await engine.dispose()
        conn = await asyncpg.connect(_dsn(url))
        try:
            assert await describe(conn, "gallery_fresh") == await describe(conn, SCHEMA)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


async def describe(conn: asyncpg.Connection, schema: str) -> dict[str, set[tuple]]:
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, generation_expression, "
        "character_maximum_length FROM information_schema.columns WHERE table_schema = $1",
        schema,
    )
    indexes = await conn.fetch("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema)
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = $1",
        schema,
    )
    strip = lambda text: text.replace(f"{schema}.", "")  # noqa: E731
    return {
        "columns": {tuple(r) for r in columns},
        "indexes": {(r["tablename"], r["indexname"], strip(r["indexdef"])) for r in indexes},
        "constraints": {(strip(r["tbl"]), r["conname"], r["def"]) for r in constraints},
    }
