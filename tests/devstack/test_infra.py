"""`make run` keeps its state under one directory: a restart finds everything again."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import nats
import pytest

from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from genimage_devstack.infra import Infra, Ports
from genimage_devstack.processes import port_open
from tests.aio import run_sync


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


def _ports(ports: Ports) -> list[int]:
    return [ports.nats, ports.nats_monitor, ports.postgres, ports.s3]


def _group_alive(pid: int) -> bool:
    """Whether any process of the group ``pid`` leads is left (the servers run in sessions of
    their own, so PostgreSQL's backends are in its group)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children() -> set[int]:
    """This process's living children, from /proc."""
    me, out = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


@pytest.mark.infra
@pytest.mark.timeout(180)
def test_state_survives_a_restart(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT")}
    ports = Ports.free()
    first = Infra(tmp_path, ports, environ=environ)
    try:
        run_sync(_write(first.start().env()))
        pids = [c.proc.pid for c in first.started]
        assert len(pids) == 3 and all(_group_alive(pid) for pid in pids)
        assert all(port_open(port) for port in _ports(ports))
    finally:
        first.stop()
    # Stopped for real: no process of any server's group is left, and every port is free again
    # (the second start below binds the same ones).
    assert not [pid for pid in pids if _group_alive(pid)]
    assert not [port for port in _ports(ports) if port_open(port)]

    second = Infra(tmp_path, ports, environ=environ)
    try:
        assert run_sync(_read(second.start().env())) == ("still here", b"still here", b"still here")
    finally:
        second.stop()


def _docker_engine() -> bool:
    import docker

    try:
        docker.from_env().ping()
    except docker.errors.DockerException:
        return False
    return True


@pytest.mark.infra
@pytest.mark.timeout(600)
def test_the_containers_branch(tmp_path: Path) -> None:
    """GENIMAGE_INFRA=containers uses testcontainers (NATS, PostgreSQL, MinIO) where a Docker
    engine runs; without one it fails loudly and leaves nothing behind, never falling back to
    local processes."""
    import docker

    ports = Ports.free()
    stack = Infra(tmp_path, ports, environ={"GENIMAGE_INFRA": "containers"})
    if not _docker_engine():
        before = _children()
        with pytest.raises(docker.errors.DockerException):
            stack.start()
        # No local process was started in place of the containers, and none is left running.
        assert _children() <= before
        assert not [port for port in _ports(ports) if port_open(port)]
        assert not (tmp_path / "postgres").exists()
        return
    try:
        endpoints = stack.start().env()
        run_sync(_write(endpoints))
        assert run_sync(_read(endpoints)) == ("still here", b"still here", b"still here")
    finally:
        stack.stop()
