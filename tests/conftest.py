"""Session fixtures: real NATS, PostgreSQL and S3 processes on free loopback ports (or
containers with GENIMAGE_INFRA=containers), stopped afterwards — also when tests fail; a
private NATS server per module; and the ``e2e``/``infra`` marks of the tests that start them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genimage_devstack.infra import Endpoints, Infra, Ports
from genimage_devstack.processes import NatsServer, free_port
from genimage_devstack.stack import SERVICES, ServiceProcess, prepare, service_env, start_services
from tests.marks import mark_process_tests, starts_infra, starts_services
from tests.private_nats import private_nats_server
from tests.session_env import SESSION_ENV


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_process_tests(items)


@pytest.fixture(scope="session")
@starts_infra
def infra() -> Iterator[Endpoints]:
    # Only what the tests start: an outer NATS_URL/DATABASE_URL/S3_ENDPOINT is not used here.
    environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT")}
    # Not under pytest's basetemp: a concurrent pytest run resets /tmp/pytest-of-<user> to 0700,
    # and PostgreSQL runs as its own unprivileged user (ADR 1) that must reach its data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="genimage-test-infra-"))
    # The disk S3 store `make run` uses (ADR 4), whatever GENIMAGE_S3_STORE says: the end-to-end
    # tests must exercise the store users run on, not moto.
    stack = Infra(data_dir, Ports.free(), for_tests=True, s3_store="disk", environ=environ)
    try:
        yield stack.start()
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_env(infra: Endpoints) -> dict[str, str]:
    """Environment for service processes, with streams, bucket and schemas in place."""
    env = service_env(infra, {"ENVIRONMENT": "test", "LOG_LEVEL": "INFO", **SESSION_ENV})
    prepare(infra, env)
    return env


@pytest.fixture(scope="session")
@starts_services
def services(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    """The four services as separate processes against the session's NATS, PostgreSQL and S3."""
    ports = {name: free_port() for name in SERVICES}
    logs = tmp_path_factory.mktemp("service-logs")
    procs = start_services(stack_env, ports, log_dir=logs)
    try:
        yield {p.name: p for p in procs}
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture(scope="module")
@starts_infra
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A NATS server of this module alone, genimage's streams in place (tests/private_nats.py)."""
    with private_nats_server(tmp_path_factory.mktemp("private-nats")) as server:
        yield server


@pytest.fixture()
def api(services: dict[str, ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as client:
        yield client
