"""The load: several users keep a steady stream of generations going over HTTP, as real clients
would — image and video, ``n`` 1 or 2, with and without ``Idempotency-Key``, retrying on 503, 429
and connection errors (with the same key), following each accepted generation until it ends.

Every logical request is recorded with what the client learnt about it (accepted with an id,
refused with a status, or answer lost). Nothing is forgotten: a request whose answer was lost is
reconciled afterwards from the GENERATION stream by its prompt, which is unique per request.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api import TERMINAL, TestUser
from tests.faults.stack import SIGNUP_GRANT

PASSWORD = "correct horse battery"
# Statuses a client retries (the server did nothing it will not redo).
RETRY_STATUS = {429, 502, 503, 504}
# Connection failures: the request never reached the gateway, safe to send again without a key.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The request was sent and its answer lost: only a request with a key may be repeated.
ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.WriteTimeout)


@dataclass
class Sent:
    """One logical request of a client and what the client learnt about it."""

    rid: str
    phase: str
    user: TestUser
    body: dict[str, Any]
    key: str | None
    attempts: list[str] = field(default_factory=list)  # "202", "503", "ConnectError", ...
    outcome: str = "pending"  # accepted | refused | lost | gave_up
    status: int | None = None
    generation_id: str | None = None
    last_seen: str | None = None  # the status the client last read

    @property
    def prompt(self) -> str:
        return str(self.body["prompt"])


@dataclass
class Shape:
    """What the clients ask for."""

    video_share: float = 0.25
    key_share: float = 0.5
    image_sizes: tuple[tuple[int, int], ...] = ((256, 256), (512, 384), (640, 640), (768, 512), (1024, 1024))
    video_durations: tuple[float, ...] = (2.0, 3.0, 4.0)

    def body(self, rng: random.Random, prompt: str) -> dict[str, Any]:
        if rng.random() < self.video_share:
            duration = rng.choice(self.video_durations)
            return {"kind": "video", "prompt": prompt, "aspect_ratio": "1:1", "duration_s": duration}
        w, h = rng.choice(self.image_sizes)
        return {"kind": "image", "prompt": prompt, "width": w, "height": h, "n": rng.choice((1, 2))}


def _code(r: httpx.Response) -> str | None:
    try:
        return str(r.json().get("code"))
    except ValueError:
        return None


WORDS = ("lighthouse", "fox", "harbour", "forest", "storm", "desert", "glacier", "city", "orchard", "comet")


class Driver:
    """Clients against one gateway. ``run_clients`` runs until ``stop`` is set."""

    def __init__(self, base_url: str, *, seed: int = 0, shape: Shape | None = None, give_up_s: float = 90) -> None:
        self.base_url = base_url
        self.rng = random.Random(seed)
        self.shape = shape or Shape()
        self.give_up_s = give_up_s
        self.sent: list[Sent] = []
        self.users: list[TestUser] = []
        self._count = 0
        self.stop = asyncio.Event()
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, connect=5))

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- users -----------------------------------------------------------------------------

    async def signup(self, phase: str) -> TestUser:
        """A new user with the (large) signup grant, retried like any client call."""
        email = f"faults-{phase}-{uuid.uuid4().hex[:10]}@example.com"
        r = await self._call("POST", "/v1/auth/signup", json={"email": email, "password": PASSWORD})
        if r.status_code == 409:  # created by an attempt whose answer was lost: log in instead
            r = await self._call("POST", "/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            body = r.json()
            me = await self._call("GET", "/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
            user = TestUser(me.json()["user"]["id"], email, body["access_token"])
        else:
            assert r.status_code == 201, r.text
            body = r.json()
            user = TestUser(body["user"]["id"], email, body["access_token"])
        deadline = time.monotonic() + 60
        while True:  # billing grants the signup credits when it sees identity.user_registered
            r = await self._call("GET", "/v1/credits", headers=user.auth)
            if r.status_code == 200 and r.json().get("available") == SIGNUP_GRANT:
                break
            assert time.monotonic() < deadline, f"signup grant not seen: {r.text}"
            await asyncio.sleep(0.1)
        self.users.append(user)
        return user

    async def reauthenticate(self) -> None:
        """Log every user in again, as a client does when its access token expired (15 min):
        the long run checks users of its first phases at the end."""
        for user in self.users:
            r = await self._call("POST", "/v1/auth/login", json={"email": user.email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            user.token = r.json()["access_token"]

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A read (or a call safe to repeat) retried through outages until ``give_up_s``."""
        deadline = time.monotonic() + self.give_up_s
        delay = 0.2
        while True:
            try:
                r = await self.http.request(method, path, **kw)
                if r.status_code not in RETRY_STATUS and r.status_code < 500:
                    return r
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            else:
                if time.monotonic() > deadline:
                    return r
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- the load ----------------------------------------------------------------------------

    async def run_clients(self, users: list[TestUser], phase: str, clients: int) -> None:
        async def client(i: int) -> None:
            rng = random.Random(self.rng.random())
            while not self.stop.is_set():
                sent = await self.submit(rng.choice(users), phase, rng)
                if sent.outcome == "accepted" and not self.stop.is_set():
                    await self.follow(sent)

        await asyncio.gather(*(client(i) for i in range(clients)))

    def new_request(self, user: TestUser, phase: str, rng: random.Random) -> Sent:
        self._count += 1
        rid = f"{phase}-r{self._count}"
        prompt = f"fault-matrix {rid} {rng.choice(WORDS)} {rng.choice(WORDS)} {uuid.uuid4().hex[:8]}"
        key = f"faults-{uuid.uuid4().hex}" if rng.random() < self.shape.key_share else None
        sent = Sent(rid, phase, user, self.shape.body(rng, prompt), key)
        self.sent.append(sent)
        return sent

    async def submit(self, user: TestUser, phase: str, rng: random.Random) -> Sent:
        sent = self.new_request(user, phase, rng)
        headers = dict(user.auth)
        if sent.key is not None:
            headers["Idempotency-Key"] = sent.key
        deadline = time.monotonic() + self.give_up_s
        delay = 0.2
        while True:
            try:
                r = await self.http.post("/v1/generations", json=sent.body, headers=headers)
            except NOT_SENT as exc:
                sent.attempts.append(type(exc).__name__)
            except ANSWER_LOST as exc:
                sent.attempts.append(type(exc).__name__)
                if sent.key is None:
                    sent.outcome = "lost"  # it may or may not have been accepted: reconciled later
                    return sent
            else:
                sent.attempts.append(str(r.status_code))
                sent.status = r.status_code
                if r.status_code in (200, 202):
                    sent.outcome, sent.generation_id = "accepted", r.json()["id"]
                    return sent
                retry_after = r.headers.get("retry-after")
                retriable = r.status_code in RETRY_STATUS or (
                    # The first request with this key still runs (or was cut off: its lease ends).
                    r.status_code == 409 and _code(r) == "idempotency_key_in_use"
                )
                if r.status_code >= 500 and sent.key is not None:
                    retriable = True  # a keyed request may always be repeated
                if not retriable:
                    sent.outcome = "refused"
                    return sent
                if retry_after and retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 5.0))
            if time.monotonic() > deadline:
                sent.outcome = "gave_up"
                return sent
            await asyncio.sleep(delay * (0.5 + rng.random()))
            delay = min(delay * 2, 2.0)

    async def follow(self, sent: Sent, *, timeout: float = 60) -> None:
        """Poll the generation as a client would, through outages, until it ends (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                r = await self.http.get(f"/v1/generations/{sent.generation_id}", headers=sent.user.auth)
                if r.status_code == 200:
                    sent.last_seen = r.json()["status"]
                    if sent.last_seen in TERMINAL:
                        return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)

    def running(self, phase: str) -> list[Sent]:
        return [s for s in self.sent if s.phase == phase and s.last_seen == "running"]

    def of_phase(self, phase: str) -> list[Sent]:
        return [s for s in self.sent if s.phase == phase]
