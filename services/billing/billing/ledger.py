"""The ledger: open, grant, reserve (hold), commit, void, expire — and nothing else.

Every function runs inside the caller's transaction and writes its ``billing.*`` event to the
outbox in that same transaction, after the account row is locked (so the outbox order of one
account is the order of its changes). A movement is a transfer of balanced entries between a
user's ``available`` / ``held`` accounts and the system accounts ``grants``, ``purchases`` and
``revenue`` (see models.py). Holds are two-phase transfers: ``pending`` → ``committed`` (the
delivered share charged, the rest released) | ``voided`` | ``expired``, exactly once; the
terminal update only matches a pending hold and the database refuses any other.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.contracts.billing import MAX_AMOUNT
from genimage_common.errors import Conflict, InsufficientCredits, NotFound, ValidationFailed
from genimage_common.events import (
    AccountOpened,
    CreditsCommitted,
    CreditsGranted,
    CreditsRefunded,
    CreditsReserved,
    EventData,
    make_event,
    utcnow,
)
from genimage_common.ids import transition_event_id
from genimage_common.outbox import enqueue
from genimage_common.pricing import share
from genimage_common.streams import BILLING

from . import metrics
from . import repository as repo
from .models import outbox

log = logging.getLogger(__name__)

SOURCE = "genimage/billing"
GrantReason = Literal["signup", "purchase", "admin", "promo"]
VoidReason = Literal["failed", "canceled"]


class LedgerInvariantError(RuntimeError):
    """A movement the invariants guarantee was refused: a bug, never a user error."""


class Outcome(StrEnum):
    COMMITTED = "committed"
    VOIDED = "voided"
    EXPIRED = "expired"
    LATE_COLLECTED = "late_collected"
    LATE_UNCOLLECTED = "late_uncollected"
    # Nothing changed: the hold was resolved before (a duplicate, or a second terminal event),
    # there is nothing due, or billing never held anything for this generation.
    ALREADY_RESOLVED = "already_resolved"
    NOTHING_DUE = "nothing_due"
    NO_HOLD = "no_hold"


@dataclass(frozen=True)
class Balance:
    available: int
    held: int


@dataclass(frozen=True)
class Hold:
    generation_id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    units: int
    status: str
    expires_at: datetime


async def _emit(session: AsyncSession, data: EventData, *, key: uuid.UUID, transition: str) -> None:
    event = make_event(data, source=SOURCE, subject=key, event_id=transition_event_id(key, transition))
    await enqueue(session, outbox, event, stream=BILLING)


def _check_amount(amount: int) -> None:
    if not 0 < amount <= MAX_AMOUNT:
        raise ValidationFailed(f"amount must be between 1 and {MAX_AMOUNT}")


async def _post(session: AsyncSession, **kw: Any) -> Row[Any]:
    """A movement the hold guarantees (its credits are held): refusal means a broken invariant."""
    row = await repo.post(session, **kw)
    if row is None:
        raise LedgerInvariantError(f"{kw['kind']} of {kw['amount']} refused for hold {kw.get('generation_id')}")
    return row


# --- queries ------------------------------------------------------------------------------


async def balance(session: AsyncSession, *, user_id: uuid.UUID) -> Balance:
    row = await repo.get_account(session, user_id)
    return Balance(row.available, row.held) if row else Balance(0, 0)


# --- accounts and grants ------------------------------------------------------------------


async def _ensure_account(session: AsyncSession, user_id: uuid.UUID) -> None:
    if await repo.create_account(session, user_id):
        await _emit(session, AccountOpened(user_id=user_id), key=user_id, transition="account_opened")


async def open_account(session: AsyncSession, *, user_id: uuid.UUID, signup_grant: int) -> Balance:
    """Idempotent: the account once, the signup grant once (keyed by the user id)."""
    await _ensure_account(session, user_id)
    if signup_grant > 0:
        return await grant(session, user_id=user_id, amount=signup_grant, reason="signup", reference=str(user_id))
    return await balance(session, user_id=user_id)


def grant_key(reason: str, reference: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"grant:{reason}:{reference}")


async def grant(
    session: AsyncSession, *, user_id: uuid.UUID, amount: int, reason: GrantReason, reference: str
) -> Balance:
    """Add credits once per (reason, reference); the same key with other terms is a conflict.

    The account is opened if needed: a purchase may be confirmed before billing has seen the
    user's registration (the signup grant still follows, keyed by the user id).
    """
    _check_amount(amount)
    await _ensure_account(session, user_id)
    if not await repo.insert_grant(session, user_id=user_id, amount=amount, reason=reason, reference=reference):
        existing = await repo.get_grant(session, reason=reason, reference=reference)
        assert existing is not None
        if existing.amount != amount or existing.user_id != user_id:
            raise Conflict(
                f"grant {reason}:{reference} is already recorded with other terms",
                reason=reason,
                reference=reference,
            )
        return await balance(session, user_id=user_id)
    row = await _post(
        session,
        kind="grant",
        user_id=user_id,
        amount=amount,
        available=amount,
        held=0,
        system="purchases" if reason == "purchase" else "grants",
        reference=f"{reason}:{reference}",
    )
    await _emit(
        session,
        CreditsGranted(user_id=user_id, amount=amount, reason=reason, reference=reference, balance=row.available_after),
        key=grant_key(reason, reference),
        transition="granted",
    )
    metrics.count(session, "grant", amount)
    return Balance(row.available_after, row.held_after)


# --- holds --------------------------------------------------------------------------------


def _hold(row: Any) -> Hold:
    return Hold(row.generation_id, row.user_id, row.amount, row.units, row.status, row.expires_at)


async def reserve(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    generation_id: uuid.UUID,
    amount: int,
    units: int = 1,
    ttl: timedelta,
) -> tuple[Hold, Balance]:
    """Place a pending hold; idempotent by generation id (same terms replay, other terms conflict).

    The hold row is inserted first: a concurrent reserve of the same generation waits on it and
    then replays; a reserve that finds too little available rolls back with its hold.
    """
    _check_amount(amount)
    if units < 1:
        raise ValidationFailed("units must be at least 1")
    expires_at = utcnow() + ttl
    if not await repo.insert_hold(
        session, generation_id=generation_id, user_id=user_id, amount=amount, units=units, expires_at=expires_at
    ):
        existing = await repo.get_hold(session, generation_id)
        if existing is None:  # no account yet: nothing to reserve from
            raise InsufficientCredits(available=0, requested=amount)
        if (existing.user_id, existing.amount, existing.units) != (user_id, amount, units):
            raise Conflict("this generation already holds credits on other terms", generation_id=str(generation_id))
        return _hold(existing), await balance(session, user_id=user_id)
    row = await repo.post(
        session,
        kind="reserve",
        user_id=user_id,
        amount=amount,
        available=-amount,
        held=amount,
        system=None,
        generation_id=generation_id,
    )
    if row is None:
        current = await balance(session, user_id=user_id)
        raise InsufficientCredits(available=current.available, requested=amount)
    await _emit(
        session,
        CreditsReserved(
            user_id=user_id,
            generation_id=generation_id,
            amount=amount,
            expires_at=expires_at,
            balance=row.available_after,
        ),
        key=generation_id,
        transition="reserved",
    )
    metrics.count(session, "reserve", amount)
    hold = Hold(generation_id, user_id, amount, units, "pending", expires_at)
    return hold, Balance(row.available_after, row.held_after)


async def commit(session: AsyncSession, *, generation_id: uuid.UUID, delivered: int) -> Outcome:
    """Charge the delivered share of a pending hold and release the rest, once.

    A completion that finds its hold expired (and refunded) charges the same share from the
    available balance if it covers it, else records it as uncollected; never negative, once.
    """
    row = await repo.settle_hold(session, generation_id, delivered=delivered)
    if row is None:
        return await _late_completion(session, generation_id=generation_id, delivered=delivered)
    user_id, charged = row.user_id, row.committed
    released = row.amount - charged
    after = None
    if charged:
        after = await _post(
            session,
            kind="commit",
            user_id=user_id,
            amount=charged,
            available=0,
            held=-charged,
            system="revenue",
            generation_id=generation_id,
        )
        metrics.count(session, "commit", charged)
    if released:
        after = await _post(
            session,
            kind="release",
            user_id=user_id,
            amount=released,
            available=released,
            held=-released,
            system=None,
            generation_id=generation_id,
        )
        metrics.count(session, "release", released)
    assert after is not None  # a hold is positive: something was charged or released
    await _emit(
        session,
        CreditsCommitted(
            user_id=user_id,
            generation_id=generation_id,
            amount=charged,
            released=released,
            balance=after.available_after,
        ),
        key=generation_id,
        transition="resolved",
    )
    return Outcome.COMMITTED


async def _late_completion(session: AsyncSession, *, generation_id: uuid.UUID, delivered: int) -> Outcome:
    hold = await repo.get_hold(session, generation_id, for_update=True)
    if hold is None:
        return Outcome.NO_HOLD
    if hold.status != "expired" or hold.late_outcome is not None:
        return Outcome.ALREADY_RESOLVED
    due = share(hold.amount, hold.units, delivered)
    if due == 0:
        return Outcome.NOTHING_DUE
    row = await repo.post(
        session,
        kind="late_charge",
        user_id=hold.user_id,
        amount=due,
        available=-due,
        held=0,
        system="revenue",
        generation_id=generation_id,
    )
    outcome = "collected" if row is not None else "uncollected"
    if not await repo.record_late_completion(session, generation_id, outcome=outcome, amount=due):
        raise LedgerInvariantError(f"late completion of hold {generation_id} already recorded under lock")
    if row is None:
        metrics.count(session, "uncollected", due)
        log.warning(
            "completion after expiry not collected: balance too low",
            extra={"generation_id": str(generation_id), "user_id": str(hold.user_id), "amount": due},
        )
        return Outcome.LATE_UNCOLLECTED
    await _emit(
        session,
        CreditsCommitted(
            user_id=hold.user_id, generation_id=generation_id, amount=due, released=0, balance=row.available_after
        ),
        key=generation_id,
        transition="late_charged",
    )
    metrics.count(session, "commit", due)
    return Outcome.LATE_COLLECTED


async def _refund(
    session: AsyncSession,
    *,
    generation_id: uuid.UUID,
    status: Literal["voided", "expired"],
    reason: Literal["failed", "canceled", "expired"],
) -> Outcome:
    row = await repo.void_hold(
        session, generation_id, status=status, void_reason=None if status == "expired" else reason
    )
    if row is None:
        exists = await repo.get_hold(session, generation_id) is not None
        return Outcome.ALREADY_RESOLVED if exists else Outcome.NO_HOLD
    kind = "expire" if status == "expired" else "refund"
    after = await _post(
        session,
        kind=kind,
        user_id=row.user_id,
        amount=row.amount,
        available=row.amount,
        held=-row.amount,
        system=None,
        generation_id=generation_id,
    )
    await _emit(
        session,
        CreditsRefunded(
            user_id=row.user_id,
            generation_id=generation_id,
            amount=row.amount,
            reason=reason,
            balance=after.available_after,
        ),
        key=generation_id,
        transition="resolved",
    )
    metrics.count(session, kind, row.amount)
    return Outcome.EXPIRED if status == "expired" else Outcome.VOIDED


async def void(session: AsyncSession, *, generation_id: uuid.UUID, reason: VoidReason) -> Outcome:
    """Refund a pending hold in full (the generation failed or was canceled). Once."""
    return await _refund(session, generation_id=generation_id, status="voided", reason=reason)


async def expire(session: AsyncSession, *, generation_id: uuid.UUID) -> Outcome:
    """Refund a pending hold in full because its time ran out. Once."""
    return await _refund(session, generation_id=generation_id, status="expired", reason="expired")


async def expire_due(session: AsyncSession, *, now: datetime | None = None, limit: int = 100) -> int:
    """Expire pending holds past their expiry (``now``: the database clock unless given).

    Safe with several sweepers: the holds are locked and skipped by the others, and the
    accounts are locked in user order so that two sweepers never deadlock.
    """
    due = await repo.due_holds(session, now=now, limit=limit)
    count = 0
    for hold in sorted(due, key=lambda h: h.user_id):
        count += await expire(session, generation_id=hold.generation_id) == Outcome.EXPIRED
    return count


async def pending_holds(session: AsyncSession) -> int:
    return await repo.count_pending_holds(session)


async def release(session: AsyncSession, *, generation_id: uuid.UUID, user_id: uuid.UUID) -> tuple[Outcome, int]:
    """Refund the pending hold of a generation the gateway reserved but could not queue (see
    ``void``; its refund says ``failed``); the outcome and the credits given back. A no-op
    once the hold is resolved; another user's hold is not found."""
    hold = await repo.get_hold(session, generation_id)
    if hold is None:
        return Outcome.NO_HOLD, 0
    if hold.user_id != user_id:
        raise NotFound("no such hold")
    outcome = await void(session, generation_id=generation_id, reason="failed")
    return outcome, hold.amount if outcome == Outcome.VOIDED else 0
