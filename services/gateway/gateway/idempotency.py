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

``claim`` / ``record`` / ``release`` take the caller's session and never commit. ``Idempotent``
is the piece a route uses: it runs them, each in a unit of work of its own, because the key is
a lease the other replicas must see while the request runs, not only after it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import DomainError

from . import repository as repo
from . import security
from .deps import CurrentUser, Services, ServicesDep
from .errors import IdempotencyKeyInUse, IdempotencyKeyReused
from .problems import MEDIA_TYPE, problem_body
from .settings import GatewaySettings

STORED_STATUSES = frozenset({200, 201, 202, 204, 402})
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


@dataclass(frozen=True)
class Outcome:
    """What a request answered, as stored and replayed."""

    status_code: int
    body: Any
    content_type: str = "application/json"


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return security.fingerprint(method.upper(), path, canonical)


async def claim(
    session: AsyncSession, settings: GatewaySettings, *, user_id: uuid.UUID, key: str, fingerprint: str
) -> Outcome | None:
    """None: this request now holds the key (once committed) and must run, then ``record`` or
    ``release``. An ``Outcome``: replay it."""
    for _ in range(3):
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
        return Outcome(row.status_code, row.response_body, row.content_type or "application/json")
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in progress; retry later")


async def record(session: AsyncSession, *, user_id: uuid.UUID, key: str, outcome: Outcome) -> None:
    """Store a final outcome for replay; any other gives the key back (its retry runs again)."""
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
        await release(session, user_id=user_id, key=key)


async def release(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> None:
    await repo.release_idempotency_key(session, user_id=user_id, key=key)


class Idempotent:
    """The ``Idempotency-Key`` of one request (a route dependency): ``run`` replays the stored
    outcome of an earlier request with the key, or runs this one and stores its outcome."""

    def __init__(self, services: Services, user_id: uuid.UUID, request: Request, key: str | None) -> None:
        self._services = services
        self._user_id = user_id
        self._request = request
        self.key = key

    async def run(self, body: BaseModel, operation: Callable[[], Awaitable[Outcome]]) -> tuple[Outcome, bool]:
        """The outcome, and whether it is a replay."""
        if self.key is None:
            return await operation(), False
        uow, user_id, key = self._services.uow, self._user_id, self.key
        request_fingerprint = fingerprint(self._request.method, self._request.url.path, body.model_dump(mode="json"))
        async with uow.transaction() as session:
            stored = await claim(
                session, self._services.settings, user_id=user_id, key=key, fingerprint=request_fingerprint
            )
        if stored is not None:
            return stored, True
        try:
            outcome = await operation()
        except DomainError as exc:
            # A refusal is an outcome too (a 402 is replayed); `record` keeps only final ones.
            problem = problem_body(exc.status, exc.code, exc.title, exc.message, self._request.url.path, **exc.fields)
            async with uow.transaction() as session:
                await record(session, user_id=user_id, key=key, outcome=Outcome(exc.status, problem, MEDIA_TYPE))
            raise
        except BaseException:
            async with uow.transaction() as session:
                await release(session, user_id=user_id, key=key)
            raise
        async with uow.transaction() as session:
            await record(session, user_id=user_id, key=key, outcome=outcome)
        return outcome, False


def _idempotent(
    services: ServicesDep,
    user: CurrentUser,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=KEY_PATTERN,
            description="Retries with the same key and body return the first outcome (kept 24 h)",
            examples=["3f8b6c2e-order-42"],
        ),
    ] = None,
) -> Idempotent:
    return Idempotent(services, user.id, request, idempotency_key)


IdempotencyDep = Annotated[Idempotent, Depends(_idempotent)]
