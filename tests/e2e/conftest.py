from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from genimage_devstack.processes import free_port
from genimage_devstack.stack import SERVICES, ServiceProcess, start_services


@pytest.fixture(scope="session")
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


@pytest.fixture()
def api(services: dict[str, ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as client:
        yield client
