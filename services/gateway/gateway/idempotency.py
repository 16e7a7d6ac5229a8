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

The database can go away between the claim and the end of the request, after the work is done
(a generation already queued). Storing the outcome (or giving the key back) is then retried on
fresh connections for ``idempotency_store_deadline_s``; past it the client hears
``503 service_unavailable`` with ``Retry-After``, never a 500, and the replica keeps what it
could not store (``Services.unsettled_keys``): a retry with the key stores it first and gets
the stored outcome (the same generation) instead of ``409`` for the whole lease, and a
background loop stores the rest once the database is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import DomainError, ServiceUnavailable
from genimage_common.redelivery import is_transient

from . import repository as repo
from . import security
from .deps import CurrentUser, Services, ServicesDep
from .errors import IdempotencyKeyInUse, IdempotencyKeyReused
from .problems import MEDIA_TYPE, problem_body
from .settings import GatewaySettings

STORED_STATUSES = frozenset({200, 201, 202, 204, 402})
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
STORE_RETRY_S = 0.1
SETTLE_INTERVAL_S = 1.0
# Bounds the memory an outage can take: past it a key is left to its lease, as before.
UNSETTLED_MAX = 10_000
RETRY_AFTER_S = 2

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Unsettled:
    """What to store for a key once the database is back: its outcome (None: give it back).
    Only until ``until`` (monotonic): past the lease another replica may hold the key."""

    outcome: Outcome | None
    until: float


async def _settle(session: AsyncSession, *, user_id: uuid.UUID, key: str, outcome: Outcome | None) -> None:
    if outcome is None:
        await release(session, user_id=user_id, key=key)
    else:
        await record(session, user_id=user_id, key=key, outcome=outcome)


async def _store_once(
    services: Services, user_id: uuid.UUID, key: str, outcome: Outcome | None, timeout: float
) -> None:
    # A unit of work of its own: a fresh session whose connection the pool pre-pings, so a
    # connection the database dropped is replaced rather than failed on.
    async with asyncio.timeout(timeout):
        async with services.uow.transaction() as session:
            await _settle(session, user_id=user_id, key=key, outcome=outcome)


async def store(services: Services, *, user_id: uuid.UUID, key: str, outcome: Outcome | None) -> bool:
    """Store ``outcome`` (None: release the key), retried while the database is away, up to
    ``idempotency_store_deadline_s``. False when it could not be: it is then kept in
    ``services.unsettled_keys`` and stored once the database is back."""
    settings = services.settings
    deadline = time.monotonic() + settings.idempotency_store_deadline_s
    delay = STORE_RETRY_S
    while True:
        remaining = deadline - time.monotonic()
        try:
            await _store_once(services, user_id, key, outcome, max(remaining, STORE_RETRY_S))
            return True
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) or is_transient(exc)):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= delay:
                log.warning(
                    "could not store the outcome of an idempotent request; kept to store later",
                    extra={"user_id": str(user_id), "release": outcome is None, "error": repr(exc)[:300]},
                )
                _keep(services, user_id, key, outcome)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _keep(services: Services, user_id: uuid.UUID, key: str, outcome: Outcome | None) -> None:
    unsettled = services.unsettled_keys
    if len(unsettled) >= UNSETTLED_MAX and (user_id, key) not in unsettled:
        return
    unsettled[(user_id, key)] = Unsettled(outcome, time.monotonic() + services.settings.idempotency_lease_s)


def _pending(services: Services, user_id: uuid.UUID, key: str) -> Unsettled | None:
    entry = services.unsettled_keys.get((user_id, key))
    if entry is not None and entry.until <= time.monotonic():
        services.unsettled_keys.pop((user_id, key), None)
        return None
    return entry


def _settled(services: Services, user_id: uuid.UUID, key: str, entry: Unsettled) -> None:
    # Only the entry that was stored: a newer one (a later request with the key) stays.
    if services.unsettled_keys.get((user_id, key)) is entry:
        del services.unsettled_keys[(user_id, key)]


async def settle_forever(services: Services) -> None:
    """Store what requests could not while the database was away, once it is back."""
    while True:
        await asyncio.sleep(SETTLE_INTERVAL_S)
        for user_id, key in list(services.unsettled_keys):
            entry = _pending(services, user_id, key)
            if entry is None:
                continue
            try:
                await _store_once(services, user_id, key, entry.outcome, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError) or is_transient(exc):
                    break  # still away: the next round tries again
                log.exception("storing a kept idempotency outcome failed; the key is left to its lease")
            _settled(services, user_id, key, entry)


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
        services, user_id, key = self._services, self._user_id, self.key
        request_fingerprint = fingerprint(self._request.method, self._request.url.path, body.model_dump(mode="json"))
        kept = _pending(services, user_id, key)
        async with services.uow.transaction() as session:
            if kept is not None:
                # An earlier request with the key ran here but could not store its outcome (the
                # database was away): store it now, so this retry replays it — or, for a key
                # given back, runs again — instead of waiting out the lease.
                await _settle(session, user_id=user_id, key=key, outcome=kept.outcome)
            stored = await claim(session, services.settings, user_id=user_id, key=key, fingerprint=request_fingerprint)
        if kept is not None:
            _settled(services, user_id, key, kept)
        if stored is not None:
            return stored, True
        try:
            outcome = await operation()
        except DomainError as exc:
            # A refusal is an outcome too (a 402 is replayed); `record` keeps only final ones.
            # Not stored now: kept and stored later, the refusal is still the answer.
            problem = problem_body(exc.status, exc.code, exc.title, exc.message, self._request.url.path, **exc.fields)
            await self._store_quietly(Outcome(exc.status, problem, MEDIA_TYPE))
            raise
        except BaseException:
            await self._store_quietly(None)
            raise
        if not await store(services, user_id=user_id, key=key, outcome=outcome):
            raise ServiceUnavailable(
                "the request was carried out but its outcome could not be recorded; "
                "retry with the same Idempotency-Key to get it",
                retry_after=RETRY_AFTER_S,
            )
        return outcome, False

    async def _store_quietly(self, outcome: Outcome | None) -> None:
        """Store while another error is on its way to the client: that error is the answer."""
        try:
            await store(self._services, user_id=self._user_id, key=self.key or "", outcome=outcome)
        except Exception:
            log.exception("storing the outcome of an idempotent request failed")


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
