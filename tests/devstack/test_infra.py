"""`make run` keeps its state under one directory: a restart finds everything again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import nats
import pytest

from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from genimage_devstack.infra import Infra, Ports


def _settings(env: dict[str, str]) -> CommonSettings:
    return CommonSettings(**{k.lower(): v for k, v in env.items()})


async def _write(env: dict[str, str]) -> None:
    conn = await asyncpg.connect(env["DATABASE_URL"].replace("+asyncpg", ""))
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    await conn.close()
    nc = await nats.connect(env["NATS_URL"])
    js = nc.jetstream()
    await js.add_stream(name="KEPT", subjects=["kept.>"])
    await js.publish("kept.one", b"still here")
    await nc.close()
    store = ObjectStore(_settings(env))
    await store.ensure_bucket()
    await store.put("kept/one.txt", b"still here", "text/plain")


async def _read(env: dict[str, str]) -> tuple[str, bytes, bytes]:
    conn = await asyncpg.connect(env["DATABASE_URL"].replace("+asyncpg", ""))
    row = await conn.fetchval("SELECT v FROM kept")
    await conn.close()
    nc = await nats.connect(env["NATS_URL"])
    msg = await nc.jetstream().get_msg("KEPT", 1)
    await nc.close()
    obj = await ObjectStore(_settings(env)).get("kept/one.txt")
    return row, msg.data, obj


@pytest.mark.timeout(180)
def test_state_survives_a_restart(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT")}
    ports = Ports.free()
    first = Infra(tmp_path, ports, environ=environ)
    try:
        asyncio.run(_write(first.start().env()))
    finally:
        first.stop()
    assert not any(c for c in first.started)

    second = Infra(tmp_path, ports, environ=environ)
    try:
        assert asyncio.run(_read(second.start().env())) == ("still here", b"still here", b"still here")
    finally:
        second.stop()


def _docker_engine() -> bool:
    import docker

    try:
        docker.from_env().ping()
    except docker.errors.DockerException:
        return False
    return True


@pytest.mark.timeout(600)
def test_the_containers_branch(tmp_path: Path) -> None:
    """GENIMAGE_INFRA=containers uses testcontainers (NATS, PostgreSQL, MinIO) where a Docker
    engine runs; without one it fails loudly and leaves nothing behind, never falling back to
    local processes."""
    import docker

    stack = Infra(tmp_path, Ports.free(), environ={"GENIMAGE_INFRA": "containers"})
    if not _docker_engine():
        with pytest.raises(docker.errors.DockerException):
            stack.start()
        assert stack.started == []
        assert not (tmp_path / "postgres").exists()
        return
    try:
        endpoints = stack.start().env()
        asyncio.run(_write(endpoints))
        assert asyncio.run(_read(endpoints)) == ("still here", b"still here", b"still here")
    finally:
        stack.stop()
