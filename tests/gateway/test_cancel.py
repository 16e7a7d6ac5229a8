"""Cancel: published for the generation worker, refunded by billing, 409 once finished."""

from __future__ import annotations

import uuid

import httpx

from tests.api import TestUser, assert_problem, wait_terminal
from tests.gateway.flows import generate
from tests.polling import eventually

HEAVY = {"width": 2048, "height": 2048, "n": 4}


def test_cancel_a_queued_generation_refunds_it(api: httpx.Client, user: TestUser, admin: TestUser) -> None:
    r = api.post(f"/v1/admin/users/{user.id}/credits", headers=admin.auth, json={"amount": 60})
    assert r.status_code == 200
    # Enough heavy work ahead that the last one is still waiting when we cancel it.
    ahead = [generate(api, user, prompt=f"heavy {i}", **HEAVY) for i in range(3)]
    last = ahead[-1]
    r = api.post(f"/v1/generations/{last['id']}/cancel", headers=user.auth)
    assert r.status_code == 202, r.text
    assert r.json()["id"] == last["id"] and r.json()["status"] in ("queued", "running", "canceled")

    done = wait_terminal(api, user, last["id"], timeout=120)
    assert done["status"] == "canceled" and done["outputs"] == []
    for g in ahead[:-1]:
        wait_terminal(api, user, g["id"], timeout=120)
    # Its 20 credits came back: the hold was voided, nothing stays reserved.
    eventually(lambda: api.get("/v1/credits", headers=user.auth).json()["reserved"] == 0, timeout=30)
    ledger = api.get("/v1/credits/ledger", headers=user.auth, params={"limit": 100}).json()["items"]
    refunds = [e for e in ledger if e["type"] == "refund" and e["generation_id"] == last["id"]]
    assert len(refunds) == 1 and refunds[0]["amount"] == 20

    # Canceling again is harmless.
    again = api.post(f"/v1/generations/{last['id']}/cancel", headers=user.auth)
    assert again.status_code == 202 and again.json()["status"] == "canceled"


def test_cancel_a_finished_generation_is_409(api: httpx.Client, user: TestUser) -> None:
    created = generate(api, user, prompt="quick")
    assert wait_terminal(api, user, created["id"])["status"] == "succeeded"
    problem = assert_problem(api.post(f"/v1/generations/{created['id']}/cancel", headers=user.auth), 409, "conflict")
    assert problem["generation_status"] == "succeeded"
    assert_problem(api.post(f"/v1/generations/{uuid.uuid4()}/cancel", headers=user.auth), 404, "not_found")
