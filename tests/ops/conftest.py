"""Fixtures of the operations tests: promtool, and a second, traced copy of the stack.

The traced stack has its own NATS server (``private_nats``) and its own database (on the session's PostgreSQL)
so its durable consumers never share work with the untraced ``services`` of the session: every
message of a traced generation is handled by a traced process.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from genimage_devstack.infra import Endpoints
from genimage_devstack.processes import NatsServer, free_port
from genimage_devstack.stack import SERVICES, ServiceProcess, prepare, service_env, start_services
from tests.aio import run_sync
from tests.marks import out_of_process, starts_services
from tests.ops.otlp import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
@out_of_process
def promtool() -> str:
    """promtool from the virtualenv (``make tools``, a dependency of ``make test``) or PATH."""
    local = Path(sys.executable).parent / "promtool"
    found = str(local) if local.exists() else shutil.which("promtool")
    assert found, "promtool is missing: run `make tools` (deploy/tools/install-promtool.sh)"
    return found


def _create_database(database_url: str) -> str:
    """A fresh database on the session's PostgreSQL server; returns its URL."""
    name = f"genimage_ops_{uuid.uuid4().hex[:8]}"
    base, _, _ = database_url.rpartition("/")
    plain = base.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        conn = await asyncpg.connect(f"{plain}/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(create())
    return f"{base}/{name}"


@pytest.fixture(scope="module")
def otlp_http() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@dataclass
class TracedStack:
    services: dict[str, ServiceProcess]
    receiver: OtlpHttpReceiver
    log_dir: Path


@pytest.fixture(scope="module")
@starts_services
def traced_stack(
    infra: Endpoints,
    private_nats: NatsServer,
    otlp_http: OtlpHttpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TracedStack]:
    """The four services as processes exporting their spans over OTLP/HTTP to ``otlp_http``,
    configured only by the standard ``OTEL_*`` variables."""
    database_url = _create_database(infra.database_url)
    endpoints = Endpoints(private_nats.url, database_url, infra.s3_endpoint, infra.s3_access_key, infra.s3_secret_key)
    env = service_env(endpoints, {"ENVIRONMENT": "test", "LOG_LEVEL": "INFO"})
    prepare(endpoints, env)
    env.pop("OTEL_SERVICE_NAME", None)  # each process names itself
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Export within a fraction of a second instead of every 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    log_dir = tmp_path_factory.mktemp("traced-service-logs")
    procs = start_services(env, {name: free_port() for name in SERVICES}, log_dir=log_dir)
    try:
        yield TracedStack({p.name: p for p in procs}, otlp_http, log_dir)
    finally:
        for p in reversed(procs):
            p.stop()
