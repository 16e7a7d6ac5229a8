"""Reserve, then publish: when ``generation.requested`` cannot be published, the gateway gives
the credits back at once (``rpc.billing.release``) and says so, instead of leaving them held
until the hold expires."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import nats
import pytest

from genimage_common.streams import GENERATION
from tests.aio import run_sync
from tests.api import TestUser, assert_problem, wait_credits, wait_terminal
from tests.gateway.flows import SMALL
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)


async def _set_max_msg_size(url: str, size: int) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(GENERATION)).config
        previous = config.max_msg_size if config.max_msg_size is not None else -1
        await js.update_stream(replace(config, max_msg_size=size))
        return previous
    finally:
        await nc.close()


@contextmanager
def generation_stream_refuses(stack_env: dict[str, str]) -> Iterator[None]:
    """The GENERATION stream refuses every new message (each is over its size limit); the
    messages it holds stay, and the limit is restored afterwards."""
    previous = run_sync(_set_max_msg_size(stack_env["NATS_URL"], 1))
    try:
        yield
    finally:
        run_sync(_set_max_msg_size(stack_env["NATS_URL"], previous))


def _ledger(api: httpx.Client, user: TestUser) -> list[dict]:
    r = api.get("/v1/credits/ledger", headers=user.auth, params={"limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def test_credits_come_back_at_once_when_publishing_fails(
    api: httpx.Client, user: TestUser, stack_env: dict[str, str]
) -> None:
    before = api.get("/v1/credits", headers=user.auth).json()
    assert before == {"available": 20, "reserved": 0}
    key = "publish-fails-1"
    with generation_stream_refuses(stack_env):
        start = time.monotonic()
        r = api.post("/v1/generations", headers={**user.auth, "Idempotency-Key": key}, json={"prompt": "lost", **SMALL})
        took = time.monotonic() - start
        problem = assert_problem(r, 503, "service_unavailable")
        assert "no credits were taken" in problem["detail"], problem
        assert problem["credits_refunded"] > 0
        assert took < 15, took
        # Given back before the answer, not 15 minutes later.
        assert api.get("/v1/credits", headers=user.auth).json() == before
        entries = _ledger(api, user)
        mine = [e for e in entries if e["generation_id"] is not None]
        assert sorted(e["type"] for e in mine) == ["refund", "reserve"], mine
        assert sum(e["amount"] for e in mine) == 0

    # Nothing final was stored under the key, but its generation's credits were refunded: a
    # retry with the same key cannot run (it would run for free) and says so, for good.
    for _ in range(2):
        r = api.post("/v1/generations", headers={**user.auth, "Idempotency-Key": key}, json={"prompt": "lost", **SMALL})
        problem = assert_problem(r, 409, "conflict")
        assert "new Idempotency-Key" in problem["detail"], problem
    assert api.get("/v1/credits", headers=user.auth).json() == before

    # With a new key it runs, and is charged once.
    r = api.post(
        "/v1/generations", headers={**user.auth, "Idempotency-Key": key + "-b"}, json={"prompt": "lost", **SMALL}
    )
    assert r.status_code == 202, r.text
    done = wait_terminal(api, user, r.json()["id"])
    assert done["status"] == "succeeded"
    cost = r.json()["cost"]
    assert cost > 0

    def settled() -> dict | None:
        credits = api.get("/v1/credits", headers=user.auth).json()
        return credits if credits == {"available": before["available"] - cost, "reserved": 0} else None

    eventually(settled, timeout=20, what="charged once")
    types = sorted(e["type"] for e in _ledger(api, user) if e["generation_id"] is not None)
    assert types == ["commit", "refund", "reserve", "reserve"], types


def test_release_is_idempotent_and_leaves_resolved_holds_alone(
    api: httpx.Client, user: TestUser, stack_env: dict[str, str]
) -> None:
    import json
    import uuid

    created = api.post("/v1/generations", headers=user.auth, json={"prompt": "kept", **SMALL})
    assert created.status_code == 202
    done = wait_terminal(api, user, created.json()["id"])
    assert done["status"] == "succeeded"
    # Billing commits the hold when it consumes ``completed``, independently of the gallery that
    # answered ``succeeded``: wait for the commit, or release would (rightly) void a pending hold.
    wait_credits(api, user, {"available": 15, "reserved": 0}, what="the hold committed")

    async def release(generation_id: str, user_id: str) -> dict:
        nc = await nats.connect(stack_env["NATS_URL"])
        try:
            msg = await nc.request(
                "rpc.billing.release",
                json.dumps({"generation_id": generation_id, "user_id": user_id}).encode(),
                timeout=5,
            )
            return json.loads(msg.data)  # type: ignore[no-any-return]
        finally:
            await nc.close()

    credits = api.get("/v1/credits", headers=user.auth).json()
    # Committed already: nothing to release, twice.
    for _ in range(2):
        reply = run_sync(release(done["id"], user.id))
        assert reply["released"] is False, reply
    assert api.get("/v1/credits", headers=user.auth).json() == credits
    # Another user's hold, or none at all: not found, nothing moves.
    reply = run_sync(release(done["id"], str(uuid.uuid4())))
    assert reply["error"]["code"] == "not_found", reply
    reply = run_sync(release(str(uuid.uuid4()), user.id))
    assert reply["released"] is False, reply
    assert len([e for e in _ledger(api, user) if e["type"] == "refund"]) == 0
