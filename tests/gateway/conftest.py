"""Gateway fixtures: the session's services, plus two "strict" gateway replicas (small
limits, OIDC against a local JWKS server, no webhook allow-list, no background work).

Settings of the gateway's background work (webhook sending) must be the same in every
replica of the session, the `services` one included: they live in `tests/session_env.py`
and reach every service through `stack_env`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genimage_devstack.processes import free_port
from genimage_devstack.stack import ServiceProcess, launch
from tests.api import TestUser, signup
from tests.gateway.servers import JwksServer, Receiver
from tests.session_env import ADMIN_EMAIL

OIDC_AUDIENCE = "genimage-tests"
STRICT = {
    "GATEWAY_BACKGROUND_WORKERS": "false",
    "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "",
    "GATEWAY_WEBHOOK_PUBLIC_TARGETS": "true",
    "GATEWAY_RATE_LIMIT_WINDOW_S": "3600",
    "GATEWAY_RATE_LIMIT_USER": "12",
    "GATEWAY_RATE_LIMIT_API_KEY": "6",
    "GATEWAY_RATE_LIMIT_LOGIN": "3",
    "GATEWAY_MAX_INFLIGHT_GENERATIONS": "2",
    "GATEWAY_OIDC_AUDIENCE": OIDC_AUDIENCE,
}


@pytest.fixture(scope="session")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def strict_gateways(
    services: dict[str, ServiceProcess],
    stack_env: dict[str, str],
    jwks: JwksServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ServiceProcess]]:
    """Two replicas sharing NATS KV and PostgreSQL with the session's services."""
    env = {**stack_env, **STRICT, "GATEWAY_OIDC_ISSUER": jwks.issuer}
    logs = tmp_path_factory.mktemp("strict-gateways")
    procs = launch(
        [ServiceProcess("gateway", free_port(), env, log_path=Path(logs) / f"gateway-{i}.log") for i in (1, 2)]
    )
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture()
def strict(strict_gateways: list[ServiceProcess]) -> Iterator[list[httpx.Client]]:
    clients = [httpx.Client(base_url=p.url, timeout=30) for p in strict_gateways]
    try:
        yield clients
    finally:
        for c in clients:
            c.close()


@pytest.fixture(scope="session")
def admin(services: dict[str, ServiceProcess]) -> TestUser:
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as client:
        r = client.post("/v1/auth/signup", json={"email": ADMIN_EMAIL, "password": "correct horse battery"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["user"]["role"] == "admin"
        return TestUser(body["user"]["id"], ADMIN_EMAIL, body["access_token"])


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def user(api: httpx.Client) -> TestUser:
    return signup(api)
