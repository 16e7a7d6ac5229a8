"""Billing fixtures: a migrated template database cloned per test (or per module), and billing
service processes on the module's private NATS server (``private_nats``, tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from billing.deps import Deps
from billing.settings import BillingSettings
from genimage_common.database import SessionMaker, make_engine, make_sessionmaker
from genimage_common.pricing import Pricing
from genimage_devstack.infra import Endpoints
from genimage_devstack.processes import NatsServer, free_port
from genimage_devstack.stack import ServiceProcess, launch
from tests.aio import run_sync


def _dsn(url: str, database: str | None = None) -> str:
    """asyncpg DSN of a SQLAlchemy URL, optionally on another database of the same server."""
    base, _, current = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")
    return f"{base}/{database or current}"


def _sqlalchemy_url(infra_url: str, database: str) -> str:
    return f"{infra_url.rpartition('/')[0]}/{database}"


async def _admin(infra_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(infra_url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def billing_template(infra: Endpoints) -> str:
    """A database with the billing schema migrated to head (0001 → 0002 ...), cloned by tests."""
    name = f"billing_template_{uuid.uuid4().hex[:8]}"
    run_sync(_admin(infra.database_url, f'CREATE DATABASE "{name}"'))
    url = _sqlalchemy_url(infra.database_url, name)
    subprocess.run([sys.executable, "-m", "billing", "migrate"], env={**os.environ, "DATABASE_URL": url}, check=True)
    return name


async def _clone(infra: Endpoints, template: str) -> str:
    name = f"billing_{uuid.uuid4().hex[:12]}"
    await _admin(infra.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


@pytest.fixture()
async def database_url(infra: Endpoints, billing_template: str) -> AsyncIterator[str]:
    """A fresh billing database of this test's own, dropped afterwards."""
    name = await _clone(infra, billing_template)
    yield _sqlalchemy_url(infra.database_url, name)
    await _admin(infra.database_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_database_url(infra: Endpoints, billing_template: str) -> Iterator[str]:
    """One billing database for a module whose tests share service processes (distinct users)."""
    name = run_sync(_clone(infra, billing_template))
    yield _sqlalchemy_url(infra.database_url, name)
    run_sync(_admin(infra.database_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture()
async def sessions(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = make_engine(database_url, pool_size=20)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture()
def deps(sessions: SessionMaker) -> Deps:
    """What the entry points get, without a relay (tests that relay start their own)."""
    return Deps(settings=BillingSettings(), pricing=Pricing(), sessions=sessions)


def start_billing(
    *, nats_url: str, database_url: str, log_dir: Path, replicas: int = 1, **settings: str
) -> list[ServiceProcess]:
    """``python -m billing`` processes against the given NATS and database, ready when returned."""
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "INFO",
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        **{f"BILLING_{k.upper()}": v for k, v in settings.items()},
    }
    return launch(
        [ServiceProcess("billing", free_port(), env, log_path=log_dir / f"billing-{i}.log") for i in range(replicas)]
    )


@pytest.fixture()
async def nc(private_nats: NatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(private_nats.url)
    try:
        yield client
    finally:
        await client.close()
