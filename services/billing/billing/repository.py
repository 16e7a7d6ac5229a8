"""SQL of the billing schema. No commits, no publishing: the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import accounts, grants, holds, ledger_entries


async def create_account(session: AsyncSession, user_id: uuid.UUID) -> bool:
    result = await session.execute(
        insert(accounts).values(user_id=user_id).on_conflict_do_nothing().returning(accounts.c.user_id)
    )
    return result.first() is not None


async def get_account(session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False) -> Row[Any] | None:
    stmt = select(accounts).where(accounts.c.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).first()


async def move(
    session: AsyncSession, user_id: uuid.UUID, *, available: int, reserved: int, require_available: int = 0
) -> Row[Any] | None:
    """Shift balances atomically; None when ``available`` would fall below ``require_available``."""
    result = await session.execute(
        update(accounts)
        .where(accounts.c.user_id == user_id, accounts.c.available >= require_available)
        .values(
            available=accounts.c.available + available,
            reserved=accounts.c.reserved + reserved,
            updated_at=func.now(),
        )
        .returning(accounts.c.available, accounts.c.reserved)
    )
    return result.first()


async def add_entry(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    type: str,
    amount: int,
    balance_after: int,
    generation_id: uuid.UUID | None = None,
    reference: str | None = None,
) -> None:
    await session.execute(
        insert(ledger_entries).values(
            user_id=user_id,
            type=type,
            amount=amount,
            balance_after=balance_after,
            generation_id=generation_id,
            reference=reference,
        )
    )


async def get_grant(session: AsyncSession, *, reason: str, reference: str) -> Row[Any] | None:
    return (
        await session.execute(select(grants).where(grants.c.reason == reason, grants.c.reference == reference))
    ).first()


async def insert_grant(session: AsyncSession, *, user_id: uuid.UUID, amount: int, reason: str, reference: str) -> bool:
    result = await session.execute(
        insert(grants)
        .values(user_id=user_id, amount=amount, reason=reason, reference=reference)
        .on_conflict_do_nothing()
        .returning(grants.c.reference)
    )
    return result.first() is not None


async def get_hold(session: AsyncSession, generation_id: uuid.UUID, *, for_update: bool = False) -> Row[Any] | None:
    stmt = select(holds).where(holds.c.generation_id == generation_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).first()


async def insert_hold(
    session: AsyncSession,
    *,
    generation_id: uuid.UUID,
    user_id: uuid.UUID,
    amount: int,
    units: int,
    expires_at: datetime,
) -> bool:
    result = await session.execute(
        insert(holds)
        .values(generation_id=generation_id, user_id=user_id, amount=amount, units=units, expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(holds.c.generation_id)
    )
    return result.first() is not None


async def resolve_hold(session: AsyncSession, generation_id: uuid.UUID, *, status: str, committed: int | None) -> bool:
    """Pending → terminal, once: the WHERE makes a second resolution a no-op."""
    result = await session.execute(
        update(holds)
        .where(holds.c.generation_id == generation_id, holds.c.status == "pending")
        .values(status=status, committed=committed, resolved_at=func.now())
        .returning(holds.c.generation_id)
    )
    return result.first() is not None


async def expired_hold_ids(session: AsyncSession, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """Pending holds past expiry, locked; SKIP LOCKED lets N sweepers split the work."""
    result = await session.execute(
        select(holds.c.generation_id)
        .where(holds.c.status == "pending", holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result.scalars())


async def list_entries(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, before_id: int | None
) -> list[Row[Any]]:
    stmt = select(ledger_entries).where(ledger_entries.c.user_id == user_id)
    if before_id is not None:
        stmt = stmt.where(ledger_entries.c.id < before_id)
    stmt = stmt.order_by(ledger_entries.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).all())
