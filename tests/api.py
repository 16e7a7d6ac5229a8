"""Test users, generations and errors through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.polling import eventually

# Every error of the API is RFC 9457 problem+json (written here, not imported from the gateway,
# so that a test fails if the gateway changes it).
PROBLEM = "application/problem+json"


@dataclass
class TestUser:
    __test__ = False

    id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def signup(api: httpx.Client, *, wait_for_credits: int | None = 20) -> TestUser:
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    r = api.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    body = r.json()
    user = TestUser(body["user"]["id"], email, body["access_token"])
    if wait_for_credits is not None:
        # Billing grants the signup credits when it sees identity.user_registered.
        eventually(
            lambda: api.get("/v1/credits", headers=user.auth).json().get("available") == wait_for_credits,
            what="signup credits granted",
        )
    return user


TERMINAL = ("succeeded", "failed", "canceled")


def wait_terminal(api: httpx.Client, user: TestUser, generation_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the generation until it reached a terminal status; its last state."""

    def probe() -> dict[str, Any] | None:
        r = api.get(f"/v1/generations/{generation_id}", headers=user.auth)
        if r.status_code == 404:  # not projected yet
            return None
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["status"] in TERMINAL else None

    return eventually(probe, timeout=timeout, what=f"generation {generation_id} finished")


def generated(api: httpx.Client, user: TestUser, prompt: str, **body: Any) -> dict[str, Any]:
    """One image generation queued and run to success; its final state."""
    r = api.post("/v1/generations", headers=user.auth, json={"kind": "image", "prompt": prompt, **body})
    assert r.status_code == 202, r.text
    done = wait_terminal(api, user, r.json()["id"])
    assert done["status"] == "succeeded", done
    return done


def wait_credits(api: httpx.Client, user: TestUser, expected: dict[str, int], *, what: str = "credits settled") -> None:
    """Poll the user's balance until it is ``expected`` ({"available": ..., "reserved": ...})."""
    eventually(lambda: api.get("/v1/credits", headers=user.auth).json() == expected, what=what)


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a problem+json of ``status`` with the stable ``code``; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["code"] == code and body["status"] == status, body
    return body
