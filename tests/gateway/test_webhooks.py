"""Webhooks: Standard Webhooks signatures, event filters, retries, recorded deliveries, SSRF."""

from __future__ import annotations

import ipaddress
import itertools
import json
import uuid

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway import ssrf
from gateway.settings import GatewaySettings
from gateway.webhooks import retry_delay
from genimage_common.database import make_engine
from genimage_common.ids import generation_id_for
from tests.aio import run_sync
from tests.api import TestUser, assert_problem, signup, wait_terminal
from tests.gateway.flows import generate
from tests.gateway.servers import Receiver
from tests.polling import eventually


def _secret(api: httpx.Client, user: TestUser) -> str:
    r = api.get("/v1/webhooks/secret", headers=user.auth)
    assert r.status_code == 200
    return r.json()["key"]


def test_deliveries_are_signed_and_filtered(api: httpx.Client, user: TestUser, receiver: Receiver) -> None:
    url = receiver.answer("/all")
    everything = generate(api, user, prompt="hooked", webhook=url)
    only_completed = generate(
        api, user, prompt="hooked once", webhook=receiver.answer("/done"), webhook_events=["completed"]
    )
    wait_terminal(api, user, everything["id"])
    wait_terminal(api, user, only_completed["id"])

    def types(path: str) -> list[str]:
        return [json.loads(r.body)["type"] for r in receiver.at(path)]

    eventually(lambda: "generation.completed" in types("/all"), what="completed webhook")
    eventually(lambda: types("/done") == ["generation.completed"], what="filtered webhook")
    assert "generation.started" in types("/all") and "generation.progress" in types("/all")

    verifier = Webhook(_secret(api, user))
    for request in receiver.at("/all") + receiver.at("/done"):
        payload = verifier.verify(request.body, request.headers)
        assert payload["data"]["generation_id"] in (everything["id"], only_completed["id"])
        assert request.headers["content-type"] == "application/json"
    completed = json.loads(receiver.at("/done")[0].body)
    assert completed["data"]["status"] == "succeeded"
    assert all("object_key" not in o for o in completed["data"]["outputs"])

    # Another user's secret does not verify these.
    stranger = Webhook(_secret(api, signup(api, wait_for_credits=None)))
    with pytest.raises(WebhookVerificationError):
        stranger.verify(receiver.at("/done")[0].body, receiver.at("/done")[0].headers)

    recorded = api.get(f"/v1/generations/{only_completed['id']}/webhooks", headers=user.auth).json()["items"]
    assert [(d["event_type"], d["status"], d["attempts"]) for d in recorded] == [
        ("generation.completed", "delivered", 1)
    ]
    assert recorded[0]["id"] == receiver.at("/done")[0].headers["webhook-id"]


def _deliveries_once(api: httpx.Client, user: TestUser, generation_id: str, status: str, *, what: str) -> list[dict]:
    """The generation's webhook deliveries, once the first of them has reached ``status``."""

    def reached() -> list[dict] | None:
        items = api.get(f"/v1/generations/{generation_id}/webhooks", headers=user.auth).json()["items"]
        return items if items and items[0]["status"] == status else None

    return eventually(reached, timeout=30, what=what)


def test_5xx_is_retried_with_backoff_then_delivered(api: httpx.Client, user: TestUser, receiver: Receiver) -> None:
    url = receiver.answer("/flaky", 500, 503)
    created = generate(api, user, prompt="retry me", webhook=url, webhook_events=["completed"])
    wait_terminal(api, user, created["id"])
    (delivery,) = _deliveries_once(api, user, created["id"], "delivered", what="delivered after retries")
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 204
    attempts = receiver.at("/flaky")
    assert len(attempts) == 3
    # The same message each time (same webhook-id), signed anew.
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    verifier = Webhook(_secret(api, user))
    for attempt in attempts:
        verifier.verify(attempt.body, attempt.headers)


def test_backoff_is_exponential_over_hours() -> None:
    settings = GatewaySettings.model_construct()  # the defaults (not this session's fast retries)
    delays = [retry_delay(settings, n) for n in range(1, settings.webhook_max_attempts)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(5 * 4 ** (n - 1), 10 * 3600)
        assert nominal * 0.9 <= delay <= nominal * 1.1
    assert all(b > a for a, b in itertools.pairwise(delays))
    assert 6 * 3600 < sum(delays) < 48 * 3600


def test_gives_up_after_max_attempts(api: httpx.Client, user: TestUser, receiver: Receiver) -> None:
    url = receiver.answer("/down", 500, 500, 500, 500, 500)
    created = generate(api, user, prompt="nobody listens", webhook=url, webhook_events=["completed"])
    wait_terminal(api, user, created["id"])
    (delivery,) = _deliveries_once(api, user, created["id"], "failed", what="delivery given up")
    assert delivery["attempts"] == 4 and delivery["last_error"] == "HTTP 500"  # GATEWAY_WEBHOOK_MAX_ATTEMPTS=4
    assert len(receiver.at("/down")) == 4


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name that resolves to loopback
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
    ],
)
def test_private_targets_are_refused(strict: list[httpx.Client], url: str) -> None:
    """On a replica with no allow-list (production defaults)."""
    gateway = strict[0]
    user = signup(gateway, wait_for_credits=None)
    r = gateway.post(
        "/v1/generations", headers=user.auth, json={"prompt": "x", "width": 64, "height": 64, "webhook": url}
    )
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "webhook"]


def test_refusal_after_dns_resolution_and_allow_list() -> None:
    loopback = ssrf.parse_networks(["127.0.0.0/8", "::1/128"])

    async def check(url: str, allowed: list, public: bool = True) -> str:
        try:
            target = await ssrf.resolve(url, allowed, public=public)
        except ssrf.TargetRefused as exc:
            return f"refused: {exc}"
        return target.address

    assert (run_sync(check("http://localhost:9/x", []))).startswith("refused")
    assert ipaddress.ip_address(run_sync(check("http://localhost:9/x", loopback))).is_loopback
    assert run_sync(check("ftp://127.0.0.1/x", loopback)).startswith("refused")
    assert run_sync(check("http://8.8.8.8/x", loopback, public=False)).startswith("refused")
    assert run_sync(check("http://8.8.8.8/x", [])) == "8.8.8.8"  # resolving only: nothing is sent
    assert run_sync(check("http://no-such-host.invalid/x", [])).startswith("refused")


def _subscribed(stack_env: dict[str, str], generation_id: uuid.UUID) -> bool:
    async def query() -> bool:
        engine = make_engine(stack_env["DATABASE_URL"], pool_size=1)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text("SELECT count(*) FROM identity.webhook_subscriptions WHERE generation_id = :id"),
                    {"id": generation_id},
                )
        finally:
            await engine.dispose()
        return bool(found)

    return run_sync(query())


def test_a_generation_refused_its_credits_leaves_no_webhook_behind(
    api: httpx.Client, user: TestUser, receiver: Receiver, stack_env: dict[str, str]
) -> None:
    """The webhook is recorded in the request's unit of work, which a refused reserve rolls
    back: no subscription outlives a generation that never existed."""
    spent = generate(api, user, prompt="all my credits", n=4, webhook=receiver.answer("/spent"))
    key = f"broke-{uuid.uuid4()}"
    r = api.post(
        "/v1/generations",
        headers={**user.auth, "Idempotency-Key": key},
        json={"prompt": "one too many", "width": 64, "height": 64, "webhook": receiver.answer("/broke")},
    )
    assert_problem(r, 402, "insufficient_credits")
    refused = generation_id_for(uuid.UUID(user.id), key)
    assert not _subscribed(stack_env, refused)
    # The accepted one has its subscription (so the query above can see one when it is there).
    assert _subscribed(stack_env, uuid.UUID(spent["id"]))
    wait_terminal(api, user, spent["id"])
    assert receiver.at("/broke") == []
