"""SQL only: no side effects, no commits, no publishing. Every function runs in the caller's
transaction; the balance of an account changes only through ``post``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Row, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import accounts, grants, holds, transfers

# --- accounts and transfers ---------------------------------------------------------------


async def create_account(session: AsyncSession, user_id: uuid.UUID) -> bool:
    result = await session.execute(
        insert(accounts).values(user_id=user_id).on_conflict_do_nothing().returning(accounts.c.user_id)
    )
    return result.first() is not None


async def get_account(session: AsyncSession, user_id: uuid.UUID) -> Row[Any] | None:
    return (await session.execute(select(accounts).where(accounts.c.user_id == user_id))).first()


# One round trip for a whole movement: the account row is updated (and so locked) first, the
# transfer and its balanced legs are written from what that update returned. The WHERE keeps
# both user balances non-negative, so "not enough" is an empty result, not an exception; the
# CHECK constraints and the deferred triggers stay the last word.
_POST = text(
    """
    WITH acc AS (
        UPDATE billing.accounts
           SET available = available + CAST(:da AS bigint), held = held + CAST(:dh AS bigint), updated_at = now()
         WHERE user_id = CAST(:user_id AS uuid)
           AND available + CAST(:da AS bigint) >= 0 AND held + CAST(:dh AS bigint) >= 0
        RETURNING available, held
    ), t AS (
        INSERT INTO billing.transfers (kind, user_id, generation_id, reference, amount,
                                       available_delta, held_delta, available_after, held_after)
        SELECT CAST(:kind AS varchar), CAST(:user_id AS uuid), CAST(:generation_id AS uuid),
               CAST(:reference AS varchar), CAST(:amount AS bigint), CAST(:da AS bigint), CAST(:dh AS bigint),
               acc.available, acc.held
          FROM acc
        RETURNING id, available_after, held_after
    ), legs AS (
        INSERT INTO billing.entries (transfer_id, account, user_id, amount)
        SELECT t.id, leg.account, leg.user_id, leg.amount
          FROM t, unnest(CAST(:accounts AS varchar[]), CAST(:users AS uuid[]), CAST(:amounts AS bigint[]))
                  AS leg(account, user_id, amount)
    )
    SELECT id, available_after, held_after FROM t
    """
)


async def post(
    session: AsyncSession,
    *,
    kind: str,
    user_id: uuid.UUID,
    amount: int,
    available: int,
    held: int,
    system: str | None,
    generation_id: uuid.UUID | None = None,
    reference: str | None = None,
) -> Row[Any] | None:
    """Post one transfer: the user's ``available`` / ``held`` change by the given deltas and the
    ``system`` account takes the opposite of their sum, so the legs balance. None (and nothing
    written) when a user balance would fall below zero or the account does not exist."""
    legs: list[tuple[str, uuid.UUID | None, int]] = []
    if available:
        legs.append(("available", user_id, available))
    if held:
        legs.append(("held", user_id, held))
    if available + held:
        assert system is not None, "an unbalanced user side needs a system account"
        legs.append((system, None, -(available + held)))
    result = await session.execute(
        _POST,
        {
            "kind": kind,
            "user_id": user_id,
            "generation_id": generation_id,
            "reference": reference,
            "amount": amount,
            "da": available,
            "dh": held,
            "accounts": [leg[0] for leg in legs],
            "users": [leg[1] for leg in legs],
            "amounts": [leg[2] for leg in legs],
        },
    )
    return result.first()


async def list_transfers(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, before_id: int | None
) -> list[Row[Any]]:
    stmt = select(transfers).where(transfers.c.user_id == user_id)
    if before_id is not None:
        stmt = stmt.where(transfers.c.id < before_id)
    stmt = stmt.order_by(transfers.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).all())


# --- grants -------------------------------------------------------------------------------


async def get_grant(session: AsyncSession, *, reason: str, reference: str) -> Row[Any] | None:
    return (
        await session.execute(select(grants).where(grants.c.reason == reason, grants.c.reference == reference))
    ).first()


async def insert_grant(session: AsyncSession, *, user_id: uuid.UUID, amount: int, reason: str, reference: str) -> bool:
    """False when the key is taken (a concurrent insert of the same key waits for its commit)."""
    result = await session.execute(
        insert(grants)
        .values(user_id=user_id, amount=amount, reason=reason, reference=reference)
        .on_conflict_do_nothing()
        .returning(grants.c.reference)
    )
    return result.first() is not None


# --- holds --------------------------------------------------------------------------------


async def get_hold(session: AsyncSession, generation_id: uuid.UUID, *, for_update: bool = False) -> Row[Any] | None:
    stmt = select(holds).where(holds.c.generation_id == generation_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).first()


# Only for a user with an account; a concurrent insert of the same generation waits for the
# first to commit, then does nothing.
_INSERT_HOLD = text(
    """
    INSERT INTO billing.holds (generation_id, user_id, amount, units, expires_at)
    SELECT CAST(:generation_id AS uuid), CAST(:user_id AS uuid), CAST(:amount AS bigint), CAST(:units AS integer),
           CAST(:expires_at AS timestamptz)
     WHERE EXISTS (SELECT 1 FROM billing.accounts WHERE user_id = CAST(:user_id AS uuid))
    ON CONFLICT (generation_id) DO NOTHING
    RETURNING generation_id
    """
)


async def insert_hold(
    session: AsyncSession,
    *,
    generation_id: uuid.UUID,
    user_id: uuid.UUID,
    amount: int,
    units: int,
    expires_at: datetime,
) -> bool:
    """False when the generation already has a hold or the user has no account."""
    result = await session.execute(
        _INSERT_HOLD,
        {
            "generation_id": generation_id,
            "user_id": user_id,
            "amount": amount,
            "units": units,
            "expires_at": expires_at,
        },
    )
    return result.first() is not None


# Statements built once: executing a prebuilt construct skips rebuilding it on every call.
_SETTLE_HOLD = (
    update(holds)
    .where(holds.c.generation_id == bindparam("gid"), holds.c.status == "pending")
    .values(
        status="committed",
        # pricing.share, in the statement that settles the hold (one round trip, under its row
        # lock); tests/billing/test_state_machine holds the two to the same result.
        committed=func.least(
            holds.c.amount, holds.c.amount * bindparam("delivered", type_=BigInteger) // holds.c.units
        ),
        resolved_at=func.now(),
    )
    .returning(holds.c.user_id, holds.c.amount, holds.c.committed)
)
_VOID_HOLD = (
    update(holds)
    .where(holds.c.generation_id == bindparam("gid"), holds.c.status == "pending")
    .values(status=bindparam("new_status"), void_reason=bindparam("reason"), resolved_at=func.now())
    .returning(holds.c.user_id, holds.c.amount)
)


async def settle_hold(session: AsyncSession, generation_id: uuid.UUID, *, delivered: int) -> Row[Any] | None:
    """Pending → committed with the delivered share charged; None when the hold is not pending."""
    result = await session.execute(_SETTLE_HOLD, {"gid": generation_id, "delivered": max(delivered, 0)})
    return result.first()


async def void_hold(
    session: AsyncSession, generation_id: uuid.UUID, *, status: str, void_reason: str | None
) -> Row[Any] | None:
    """Pending → voided / expired; None when the hold is not pending."""
    result = await session.execute(_VOID_HOLD, {"gid": generation_id, "new_status": status, "reason": void_reason})
    return result.first()


async def record_late_completion(session: AsyncSession, generation_id: uuid.UUID, *, outcome: str, amount: int) -> bool:
    result = await session.execute(
        update(holds)
        .where(holds.c.generation_id == generation_id, holds.c.status == "expired", holds.c.late_outcome.is_(None))
        .values(late_outcome=outcome, late_amount=amount, late_resolved_at=func.now())
        .returning(holds.c.generation_id)
    )
    return result.first() is not None


async def due_holds(session: AsyncSession, *, now: datetime | None, limit: int) -> list[Row[Any]]:
    """Pending holds past expiry, locked; SKIP LOCKED lets N sweepers split the work."""
    deadline = now if now is not None else func.now()
    result = await session.execute(
        select(holds.c.generation_id, holds.c.user_id)
        .where(holds.c.status == "pending", holds.c.expires_at <= deadline)
        .order_by(holds.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result.all())


async def count_pending_holds(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(holds).where(holds.c.status == "pending")) or 0
