"""Test users through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

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
