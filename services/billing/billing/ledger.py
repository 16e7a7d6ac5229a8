"""The ledger: grant, reserve (hold), commit, void, expire — and nothing else.

Every function runs inside the caller's transaction and writes its ``billing.*`` event to
the outbox in that same transaction. Holds resolve exactly once: the terminal update only
matches a pending hold, so a second resolution changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import Conflict, InsufficientCredits, NotFound
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
from genimage_common.streams import BILLING

from . import repository as repo
from .models import outbox

SOURCE = "genimage/billing"
GrantReason = Literal["signup", "purchase", "admin", "promo"]


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int


@dataclass(frozen=True)
class Hold:
    generation_id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    status: str
    expires_at: datetime


async def _emit(session: AsyncSession, data: EventData, *, key: uuid.UUID, transition: str) -> None:
    event = make_event(data, source=SOURCE, subject=key, event_id=transition_event_id(key, transition))
    await enqueue(session, outbox, event, stream=BILLING)


async def balance(session: AsyncSession, *, user_id: uuid.UUID) -> Balance:
    row = await repo.get_account(session, user_id)
    return Balance(row.available, row.reserved) if row else Balance(0, 0)


async def open_account(session: AsyncSession, *, user_id: uuid.UUID, signup_grant: int) -> None:
    """Idempotent: the account once, the signup grant once (keyed by the user id)."""
    if await repo.create_account(session, user_id):
        await _emit(session, AccountOpened(user_id=user_id), key=user_id, transition="account_opened")
    if signup_grant > 0:
        await grant(session, user_id=user_id, amount=signup_grant, reason="signup", reference=str(user_id))


async def grant(
    session: AsyncSession, *, user_id: uuid.UUID, amount: int, reason: GrantReason, reference: str
) -> Balance:
    """Add credits once per (reason, reference); the same key with another amount is a conflict."""
    if amount <= 0:
        raise Conflict("a grant must be positive")
    existing = await repo.get_grant(session, reason=reason, reference=reference)
    if existing is not None:
        if existing.amount != amount or existing.user_id != user_id:
            raise Conflict(f"grant {reason}:{reference} already recorded with other terms")
        return await balance(session, user_id=user_id)
    if await repo.get_account(session, user_id) is None:
        raise NotFound("no billing account for this user")
    if not await repo.insert_grant(session, user_id=user_id, amount=amount, reason=reason, reference=reference):
        # A concurrent grant with the same key won the race: replay its outcome.
        return await grant(session, user_id=user_id, amount=amount, reason=reason, reference=reference)
    row = await repo.move(session, user_id, available=amount, reserved=0)
    assert row is not None
    await repo.add_entry(
        session,
        user_id=user_id,
        type="grant",
        amount=amount,
        balance_after=row.available,
        reference=f"{reason}:{reference}",
    )
    await _emit(
        session,
        CreditsGranted(user_id=user_id, amount=amount, reason=reason, reference=reference, balance=row.available),
        key=uuid.uuid5(uuid.NAMESPACE_URL, f"grant:{reason}:{reference}"),
        transition="granted",
    )
    return Balance(row.available, row.reserved)


async def reserve(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    generation_id: uuid.UUID,
    amount: int,
    units: int = 1,
    ttl: timedelta,
) -> tuple[Hold, Balance]:
    """Place a pending hold; idempotent by generation id (same amount replays, another conflicts)."""
    existing = await repo.get_hold(session, generation_id)
    if existing is not None:
        if existing.amount != amount or existing.user_id != user_id:
            raise Conflict("this generation already holds a different amount")
        return _hold(existing), await balance(session, user_id=user_id)
    row = await repo.move(session, user_id, available=-amount, reserved=amount, require_available=amount)
    if row is None:
        current = await balance(session, user_id=user_id)
        raise InsufficientCredits(available=current.available, requested=amount)
    expires_at = utcnow() + ttl
    if not await repo.insert_hold(
        session, generation_id=generation_id, user_id=user_id, amount=amount, units=units, expires_at=expires_at
    ):
        # A concurrent reserve of the same generation won; undo ours by rolling back the caller.
        raise Conflict("a reserve for this generation is already in progress")
    await repo.add_entry(
        session,
        user_id=user_id,
        type="reserve",
        amount=-amount,
        balance_after=row.available,
        generation_id=generation_id,
    )
    await _emit(
        session,
        CreditsReserved(
            user_id=user_id, generation_id=generation_id, amount=amount, expires_at=expires_at, balance=row.available
        ),
        key=generation_id,
        transition="reserved",
    )
    hold = Hold(generation_id, user_id, amount, "pending", expires_at)
    return hold, Balance(row.available, row.reserved)


def _hold(row: Any) -> Hold:
    return Hold(row.generation_id, row.user_id, row.amount, row.status, row.expires_at)


async def commit(session: AsyncSession, *, generation_id: uuid.UUID, delivered: int) -> bool:
    """Charge what was delivered (``delivered`` of the hold's units), release the rest. Once."""
    hold = await repo.get_hold(session, generation_id, for_update=True)
    if hold is None or hold.status != "pending":
        return False
    charged = min(hold.amount, hold.amount * max(delivered, 0) // hold.units)
    released = hold.amount - charged
    await repo.resolve_hold(session, generation_id, status="committed", committed=charged)
    row = await repo.move(session, hold.user_id, available=released, reserved=-hold.amount)
    assert row is not None
    await repo.add_entry(
        session, user_id=hold.user_id, type="commit", amount=0, balance_after=row.available, generation_id=generation_id
    )
    if released:
        await repo.add_entry(
            session,
            user_id=hold.user_id,
            type="release",
            amount=released,
            balance_after=row.available,
            generation_id=generation_id,
        )
    await _emit(
        session,
        CreditsCommitted(
            user_id=hold.user_id, generation_id=generation_id, amount=charged, released=released, balance=row.available
        ),
        key=generation_id,
        transition="resolved",
    )
    return True


async def void(
    session: AsyncSession, *, generation_id: uuid.UUID, reason: Literal["failed", "canceled", "expired"]
) -> bool:
    """Refund a pending hold in full. Once: a resolved hold is left as it is."""
    hold = await repo.get_hold(session, generation_id, for_update=True)
    if hold is None or hold.status != "pending":
        return False
    await repo.resolve_hold(
        session, generation_id, status="expired" if reason == "expired" else "voided", committed=None
    )
    row = await repo.move(session, hold.user_id, available=hold.amount, reserved=-hold.amount)
    assert row is not None
    await repo.add_entry(
        session,
        user_id=hold.user_id,
        type="refund",
        amount=hold.amount,
        balance_after=row.available,
        generation_id=generation_id,
    )
    await _emit(
        session,
        CreditsRefunded(
            user_id=hold.user_id, generation_id=generation_id, amount=hold.amount, reason=reason, balance=row.available
        ),
        key=generation_id,
        transition="resolved",
    )
    return True


async def expire_due(session: AsyncSession, *, now: datetime, limit: int = 100) -> int:
    """Void holds past their expiry; safe with several sweepers (rows are locked, skipped by others)."""
    count = 0
    for generation_id in await repo.expired_hold_ids(session, now=now, limit=limit):
        count += await void(session, generation_id=generation_id, reason="expired")
    return count


async def ledger_page(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    before = int(cursor) if cursor and cursor.isdigit() else None
    rows = await repo.list_entries(session, user_id, limit=limit + 1, before_id=before)
    items = [
        {
            "id": str(r.id),
            "type": r.type,
            "amount": r.amount,
            "balance_after": r.balance_after,
            "generation_id": str(r.generation_id) if r.generation_id else None,
            "created_at": r.created_at.isoformat().replace("+00:00", "Z"),
        }
        for r in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return items, next_cursor
