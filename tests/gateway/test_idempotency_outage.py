"""The gateway's database goes away after a generation was queued, before the request's
Idempotency-Key outcome is stored (issue 10, fault matrix): the client hears 503
``service_unavailable`` with ``Retry-After``, never a 500, and its retry with the same key once
the database is back gets the same generation (replayed), not ``409 idempotency_key_in_use``
for the whole lease; the credits are reserved once.

The gateway runs against a PostgreSQL of its own, stopped while a ``Prefer: wait`` request
waits for a generation that never finishes (no generation worker runs: it stays queued);
billing and gallery run on another PostgreSQL that stays up, all on a NATS of this module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from genimage_devstack.infra import Endpoints
from genimage_devstack.processes import NatsServer, PostgresServer, free_port
from genimage_devstack.stack import ServiceProcess, launch
from tests.api import TestUser, assert_problem, signup
from tests.gateway.flows import SMALL
from tests.marks import starts_services
from tests.polling import eventually
from tests.session_env import SESSION_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BODY = {"prompt": "a fox that waits for its database", **SMALL, "seed": 11}
WAIT_S = 8


@dataclass
class Stack:
    gateway_pg: PostgresServer
    gateway: ServiceProcess


@pytest.fixture(scope="module")
@starts_services
def stack(infra: Endpoints, private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Outside pytest's basetemp: PostgreSQL may run as another user that must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="genimage-gw-outage-"))
    logs = Path(tmp_path_factory.mktemp("gateway-outage-logs"))
    shared_pg = PostgresServer(data_dir / "shared", port=free_port(), fast=True)
    gateway_pg = PostgresServer(data_dir / "gateway", port=free_port(), fast=True)
    started: list[PostgresServer] = []
    procs: list[ServiceProcess] = []
    try:
        for pg in (shared_pg, gateway_pg):
            pg.start()
            started.append(pg)
        base = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **infra.env(),
            "NATS_URL": private_nats.url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "INFO",
            **SESSION_ENV,
        }
        shared = {**base, "DATABASE_URL": shared_pg.url}
        gateway_env = {
            **base,
            "DATABASE_URL": gateway_pg.url,
            "GATEWAY_BACKGROUND_WORKERS": "false",
            "GATEWAY_IDEMPOTENCY_STORE_DEADLINE_S": "2",
        }
        for name, env in (("billing", shared), ("gallery", shared), ("gateway", gateway_env)):
            subprocess.run([sys.executable, "-m", name, "migrate"], env=env, check=True, capture_output=True)
        procs = launch(
            [
                ServiceProcess("billing", free_port(), shared, log_path=logs / "billing.log"),
                ServiceProcess("gallery", free_port(), shared, log_path=logs / "gallery.log"),
                ServiceProcess("gateway", free_port(), gateway_env, log_path=logs / "gateway.log"),
            ]
        )
        yield Stack(gateway_pg, procs[-1])
    finally:
        for p in reversed(procs):
            p.stop()
        for pg in reversed(started):
            pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture()
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway.url, timeout=60) as client:
        yield client


def _post(api: httpx.Client, user: TestUser, key: str, **headers: str) -> httpx.Response:
    return api.post("/v1/generations", headers=user.auth | {"Idempotency-Key": key} | headers, json=BODY)


def test_database_lost_after_queueing_is_503_and_the_retry_gets_the_same_generation(
    stack: Stack, api: httpx.Client
) -> None:
    user = signup(api)
    key = f"order-{uuid.uuid4()}"

    with ThreadPoolExecutor(1) as pool:
        # Queued at once, then held by `Prefer: wait` (nothing renders it): the outcome is
        # stored only when the wait ends, by which time the database is gone.
        pending = pool.submit(_post, api, user, key, Prefer=f"wait={WAIT_S}")
        listed = eventually(
            lambda: api.get("/v1/generations", headers=user.auth).json()["items"],
            timeout=WAIT_S - 3,
            what="the generation queued while the request waits",
        )
        assert not pending.done(), "the request ended before the database could be stopped"
        stack.gateway_pg.stop()
        try:
            first = pending.result(timeout=WAIT_S + 30)
            problem = assert_problem(first, 503, "service_unavailable")
            assert int(first.headers["retry-after"]) > 0, first.headers
            assert "Idempotency-Key" in problem["detail"], problem
            # Any route that loses its database answers 503 too (the handler of every route).
            assert_problem(_post(api, user, f"other-{uuid.uuid4()}"), 503, "service_unavailable")
            assert_problem(api.get("/v1/api-keys", headers=user.auth), 503, "service_unavailable")
        finally:
            stack.gateway_pg.start()

    generation_id = listed[0]["id"]
    retry = eventually(
        lambda: (r := _post(api, user, key)).status_code != 503 and r,
        timeout=30,
        what="the gateway back on its database",
    )
    assert retry.status_code == 202, retry.text
    assert retry.json()["id"] == generation_id
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["location"].endswith(generation_id)
    # Stored now: later retries replay the same outcome.
    again = _post(api, user, key)
    assert (again.status_code, again.json()) == (202, retry.json())

    # One generation, its credits reserved once.
    cost = retry.json()["cost"]
    assert [g["id"] for g in api.get("/v1/generations", headers=user.auth).json()["items"]] == [generation_id]
    assert api.get("/v1/credits", headers=user.auth).json() == {"available": 20 - cost, "reserved": cost}
