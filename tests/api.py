"""Test users and generations through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers import eventually


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
