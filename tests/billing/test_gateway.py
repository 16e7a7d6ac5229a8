"""Billing behind the gateway: concurrent HTTP requests against one balance."""

from __future__ import annotations

import asyncio
import json

import httpx
import nats
import pytest

from genimage_devstack.infra import Endpoints
from genimage_devstack.stack import ServiceProcess
from tests.aio import run_sync
from tests.api import PROBLEM, TestUser, signup
from tests.polling import eventually

pytestmark = pytest.mark.e2e


async def top_up(nats_url: str, user: TestUser, amount: int) -> dict:
    nc = await nats.connect(nats_url)
    try:
        body = {"user_id": user.id, "amount": amount, "reason": "admin", "reference": f"top-up-{user.id}"}
        reply = await nc.request("rpc.billing.grant", json.dumps(body).encode(), timeout=10)
    finally:
        await nc.close()
    return json.loads(reply.data)


async def burst(base_url: str, user: TestUser, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def generate(i: int) -> httpx.Response:
            # The gateway may also refuse with 429 while too many of this user's requests are in
            # flight; a client waits as told and asks again, until billing has the last word.
            for _ in range(30):
                r = await client.post(
                    "/v1/generations",
                    headers=user.auth,
                    json={"prompt": f"concurrent {i}", "width": 256, "height": 256, "seed": i},
                )
                if r.status_code != 429:
                    return r
                await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))
            return r

        return await asyncio.gather(*(generate(i) for i in range(n)))


def test_200_concurrent_generation_requests_against_100_credits(
    api: httpx.Client, services: dict[str, ServiceProcess], infra: Endpoints
) -> None:
    user = signup(api)  # 20 signup credits
    assert run_sync(top_up(infra.nats_url, user, 80)) == {"available": 100, "reserved": 0}

    responses = run_sync(burst(services["gateway"].url, user, 200))

    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 20, sorted(set(statuses))
    assert statuses.count(402) == 180, sorted(set(statuses))
    for r in responses:
        if r.status_code == 402:
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.json()["code"] == "insufficient_credits"
    # Whatever has run by now was charged, the rest is still held: nothing is available.
    credits = api.get("/v1/credits", headers=user.auth).json()
    assert credits["available"] == 0 and credits["reserved"] <= 100
    eventually(
        lambda: api.get("/v1/credits", headers=user.auth).json() == {"available": 0, "reserved": 0},
        timeout=90,
        what="all 20 generations committed",
    )
