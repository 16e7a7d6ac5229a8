"""Rate limits and in-flight generations shared across replicas, RateLimit headers on every
response, body size limits, and problem+json for every error."""

from __future__ import annotations

import re
import uuid

import httpx
import nats

from gateway.ratelimit import InflightSlots, Policy, gcra
from tests.aio import run_sync
from tests.api import PROBLEM, assert_problem, signup, wait_terminal
from tests.gateway.flows import SMALL
from tests.polling import eventually

LIMIT = re.compile(r'^"(?P<name>\w+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def _remaining(r: httpx.Response) -> int:
    match = LIMIT.match(r.headers["ratelimit"])
    assert match, r.headers["ratelimit"]
    return int(match["r"])


def test_user_limit_is_shared_by_replicas(strict: list[httpx.Client]) -> None:
    user = signup(strict[0], wait_for_credits=None)
    remaining = []
    for i in range(12):  # GATEWAY_RATE_LIMIT_USER=12 per hour, alternating replicas
        r = strict[i % 2].get("/v1/api-keys", headers=user.auth)
        assert r.status_code == 200, r.text
        assert r.headers["ratelimit-policy"] == '"user";q=12;w=3600'
        remaining.append(_remaining(r))
    assert remaining == list(range(11, -1, -1))
    refused = strict[1].get("/v1/api-keys", headers=user.auth)
    problem = assert_problem(refused, 429, "rate_limited")
    assert problem["policy"] == "user"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600 // 12 + 1
    assert _remaining(refused) == 0
    # Another user is not affected.
    other = signup(strict[1], wait_for_credits=None)
    assert strict[0].get("/v1/api-keys", headers=other.auth).status_code == 200


def test_api_key_has_its_own_limit_inside_the_users(strict: list[httpx.Client]) -> None:
    user = signup(strict[0], wait_for_credits=None)
    key = strict[0].post("/v1/api-keys", headers=user.auth, json={"name": "k"}).json()["key"]
    with_key = {"Authorization": f"Bearer {key}"}
    for _ in range(6):  # GATEWAY_RATE_LIMIT_API_KEY=6
        r = strict[1].get("/v1/api-keys", headers=with_key)
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"user";q=12;w=3600, "api_key";q=6;w=3600'
    assert assert_problem(strict[0].get("/v1/api-keys", headers=with_key), 429, "rate_limited")["policy"] == "api_key"
    # The user's own token still has quota left (12 - 1 - 6 used).
    assert strict[0].get("/v1/api-keys", headers=user.auth).status_code == 200


def test_headers_on_every_response(api: httpx.Client) -> None:
    user = signup(api, wait_for_credits=None)
    responses = [
        api.get("/v1/me", headers=user.auth),
        api.get("/v1/nothing-here"),
        api.get("/v1/me"),
        api.get("/v1/feed"),
        api.post("/v1/generations", headers=user.auth, json={"prompt": ""}),
        api.delete("/v1/me", headers=user.auth),
        api.get(f"/v1/generations/{uuid.uuid4()}", headers=user.auth),
    ]
    assert [r.status_code for r in responses] == [200, 404, 401, 200, 422, 405, 404]
    for r in responses:
        assert LIMIT.match(r.headers["ratelimit"]), (r.request.url, r.headers)
        assert "ratelimit-policy" in r.headers
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.json()["code"]


def test_inflight_generations_are_limited_across_replicas(
    strict: list[httpx.Client], api: httpx.Client, stack_env: dict[str, str]
) -> None:
    user = signup(strict[0])

    async def slots(action: str, *gids: str) -> int:
        nc = await nats.connect(stack_env["NATS_URL"])
        try:
            inflight = await InflightSlots.open(nc.jetstream(), "gateway_inflight", ttl_s=600)
            for gid in gids:
                if action == "add":
                    await inflight.add(user.id, gid)
                else:
                    await inflight.release(user.id, gid)
            return await inflight.count(user.id)
        finally:
            await nc.close()

    # Another replica holds two generations of this user (GATEWAY_MAX_INFLIGHT_GENERATIONS=2).
    assert run_sync(slots("add", "held-1", "held-2")) == 2
    r = strict[1].post("/v1/generations", headers=user.auth, json={"prompt": "one too many", **SMALL})
    problem = assert_problem(r, 429, "rate_limited")
    assert problem["policy"] == "inflight" and int(r.headers["retry-after"]) >= 1
    assert strict[0].get("/v1/credits", headers=user.auth).json()["reserved"] == 0

    run_sync(slots("release", "held-2"))
    r = strict[0].post("/v1/generations", headers=user.auth, json={"prompt": "fits now", **SMALL})
    assert r.status_code == 202, r.text
    assert run_sync(slots("count")) == 2
    wait_terminal(api, user, r.json()["id"])
    # Its terminal event gave the slot back.
    eventually(lambda: run_sync(slots("count")) == 1, what="slot released")


def test_gcra_allows_bursts_up_to_the_limit_then_spaces_requests() -> None:
    policy = Policy("t", limit=10, window_s=60)
    tat = None
    for expected_remaining in range(9, -1, -1):
        decision, tat = gcra(tat, 1_000_000, policy)
        assert decision.allowed and decision.remaining == expected_remaining
    refused, unchanged = gcra(tat, 1_000_000, policy)
    assert not refused.allowed and unchanged is None and refused.retry_after_s == 6
    later, _ = gcra(tat, 1_000_000 + 6_000, policy)  # one interval later: one more
    assert later.allowed and later.remaining == 0


def test_body_size_limit(api: httpx.Client) -> None:
    user = signup(api, wait_for_credits=None)
    body = '{"prompt": "' + "x" * (300 * 1024) + '"}'
    r = api.post("/v1/generations", headers=user.auth | {"content-type": "application/json"}, content=body)
    assert_problem(r, 413, "payload_too_large")

    def chunks():  # no Content-Length: counted while read
        for _ in range(300):
            yield b"x" * 1024

    r = api.post("/v1/api-keys", headers=user.auth | {"content-type": "application/json"}, content=chunks())
    assert_problem(r, 413, "payload_too_large")
