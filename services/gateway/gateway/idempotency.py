"""``Idempotency-Key`` with Stripe's semantics.

- The first request with a key runs; its outcome (status and body) is stored for
  ``idempotency_ttl_s`` (24 h) and replayed to every later request with the same key and
  the same request (method, path and canonical body).
- The same key with a different request is ``422 idempotency_key_reused``.
- While the first request still runs, another with the key is ``409 idempotency_key_in_use``;
  a holder silent for ``idempotency_lease_s`` (a crashed replica) no longer blocks the key.
- Only final outcomes are stored (2xx, ``402``): a request refused by validation, rate
  limits or an unavailable dependency stored nothing, and its retry runs again.

Keys are per user: two users never see each other's outcomes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from . import repository as repo
from . import security
from .deps import Services
from .errors import IdempotencyKeyInUse, IdempotencyKeyReused

STORED_STATUSES = frozenset({200, 201, 202, 204, 402})


@dataclass(frozen=True)
class Stored:
    status_code: int
    body: Any
    content_type: str


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return security.fingerprint(method.upper(), path, canonical)


async def begin(services: Services, *, user_id: uuid.UUID, key: str, fingerprint: str) -> Stored | None:
    """None: this request now holds the key and must run, then ``complete`` or ``release``.
    A ``Stored`` outcome: replay it."""
    settings = services.settings
    for _ in range(3):
        async with services.sessions.begin() as session:
            if await repo.claim_idempotency_key(
                session, user_id=user_id, key=key, fingerprint=fingerprint, ttl_s=settings.idempotency_ttl_s
            ):
                return None
            row = await repo.get_idempotency_key(session, user_id=user_id, key=key)
            if row is None:
                continue  # released between our insert and our read: try again
            if row.expired or (row.status_code is None and row.locked_for_s > settings.idempotency_lease_s):
                await repo.relock_idempotency_key(
                    session, user_id=user_id, key=key, fingerprint=fingerprint, ttl_s=settings.idempotency_ttl_s
                )
                return None
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request; use a new key for a new request"
                )
            if row.status_code is None:
                raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in progress; retry later")
            return Stored(row.status_code, row.response_body, row.content_type or "application/json")
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in progress; retry later")


async def complete(services: Services, *, user_id: uuid.UUID, key: str, outcome: Stored) -> None:
    async with services.sessions.begin() as session:
        if outcome.status_code in STORED_STATUSES:
            await repo.complete_idempotency_key(
                session,
                user_id=user_id,
                key=key,
                status_code=outcome.status_code,
                body=outcome.body,
                content_type=outcome.content_type,
            )
        else:
            await repo.release_idempotency_key(session, user_id=user_id, key=key)


async def release(services: Services, *, user_id: uuid.UUID, key: str) -> None:
    async with services.sessions.begin() as session:
        await repo.release_idempotency_key(session, user_id=user_id, key=key)
