"""Billing routes: plans, and the Stripe webhook (signature, tolerance, exactly-once grants)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from gateway.purchases import verify_signature
from tests.api import TestUser, assert_problem
from tests.polling import eventually
from tests.session_env import STRIPE_SECRET

PATH = "/v1/billing/webhooks/stripe"


def stripe_signed(event: dict, *, secret: str = STRIPE_SECRET, at: int | None = None) -> tuple[bytes, dict]:
    """What Stripe sends: the raw JSON and `Stripe-Signature: t=..,v1=<hmac-sha256 of "t.payload">`."""
    payload = json.dumps(event).encode()
    t = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"Stripe-Signature": f"t={t},v1={mac}", "content-type": "application/json"}


def checkout(user_id: str, plan: dict, **session: object) -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "object": "checkout.session",
                "id": f"cs_{uuid.uuid4().hex}",
                "client_reference_id": user_id,
                "payment_status": "paid",
                "amount_total": plan["price_cents"],
                "currency": plan["currency"],
                "metadata": {"plan_id": plan["id"]},
                **session,
            }
        },
    }


@pytest.fixture()
def plan(api: httpx.Client) -> dict:
    r = api.get("/v1/billing/plans")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items and {"id", "name", "credits", "price_cents", "currency", "stripe_price_id"} <= items[0].keys()
    return items[0]


def _credits(api: httpx.Client, user: TestUser) -> dict:
    return api.get("/v1/credits", headers=user.auth).json()


def test_paid_checkout_grants_the_plan_once(api: httpx.Client, user: TestUser, plan: dict) -> None:
    event = checkout(user.id, plan)
    payload, headers = stripe_signed(event)
    r = api.post(PATH, content=payload, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["granted"] is True and r.json()["credits"] == plan["credits"]
    expected = 20 + plan["credits"]
    assert _credits(api, user)["available"] == expected

    # Stripe redelivers the same event (same id): no second grant.
    payload, headers = stripe_signed(event)
    assert api.post(PATH, content=payload, headers=headers).status_code == 200
    assert _credits(api, user)["available"] == expected
    ledger = api.get("/v1/credits/ledger", headers=user.auth).json()["items"]
    assert [e["type"] for e in ledger].count("grant") == 2


def test_events_that_buy_nothing_are_acknowledged_and_ignored(api: httpx.Client, user: TestUser, plan: dict) -> None:
    cases = [
        checkout(user.id, plan, payment_status="unpaid"),
        checkout(user.id, plan, metadata={"plan_id": "no-such-plan"}),
        checkout(user.id, plan, amount_total=plan["price_cents"] - 1),
        checkout(str(uuid.uuid4()), plan),
        checkout("not-a-user-id", plan),
        {**checkout(user.id, plan), "type": "invoice.paid"},
    ]
    for event in cases:
        payload, headers = stripe_signed(event)
        r = api.post(PATH, content=payload, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["granted"] is False and r.json()["reason"]
    eventually(lambda: _credits(api, user)["available"] == 20)


def test_bad_signatures_are_400(api: httpx.Client, user: TestUser, plan: dict) -> None:
    event = checkout(user.id, plan)
    payload, headers = stripe_signed(event)
    cases = {
        "no header": {"content-type": "application/json"},
        "other secret": stripe_signed(event, secret="whsec_someone_else")[1],
        "too old": stripe_signed(event, at=int(time.time()) - 3600)[1],
        "from the future": stripe_signed(event, at=int(time.time()) + 3600)[1],
        "garbage": {"Stripe-Signature": "nonsense", "content-type": "application/json"},
    }
    for what, bad in cases.items():
        r = api.post(PATH, content=payload, headers=bad)
        assert r.status_code == 400, (what, r.text)
        assert r.json()["code"] == "bad_request"
    # Signed, then altered in transit.
    assert_problem(api.post(PATH, content=payload.replace(b"paid", b"PAID"), headers=headers), 400, "bad_request")
    assert _credits(api, user)["available"] == 20


def test_signature_scheme_accepts_any_matching_v1() -> None:
    payload, headers = stripe_signed({"id": "evt_1"})
    header = headers["Stripe-Signature"]
    t, v1 = header.split(",")
    verify_signature(payload, f"{t},v1=00ff,{v1},v0=legacy", secret=STRIPE_SECRET, tolerance_s=300)
