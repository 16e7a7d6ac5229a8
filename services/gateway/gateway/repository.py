"""SQL of the identity schema. No commits, no publishing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import api_keys, refresh_tokens, users


async def insert_user(session: AsyncSession, *, user_id: uuid.UUID, email: str, password_hash: str, role: str) -> bool:
    result = await session.execute(
        insert(users)
        .values(id=user_id, email=email, password_hash=password_hash, role=role)
        .on_conflict_do_nothing()
        .returning(users.c.id)
    )
    return result.first() is not None


async def user_by_email(session: AsyncSession, email: str) -> Row[Any] | None:
    stmt = select(users).where(func.lower(users.c.email) == email.lower(), users.c.deleted_at.is_(None))
    return (await session.execute(stmt)).first()


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(users).where(users.c.id == user_id, users.c.deleted_at.is_(None))
    return (await session.execute(stmt)).first()


async def insert_refresh_token(
    session: AsyncSession, *, user_id: uuid.UUID, family_id: uuid.UUID, token_hash: str, expires_at: datetime
) -> None:
    await session.execute(
        insert(refresh_tokens).values(
            id=uuid.uuid4(), user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
    )


async def refresh_token_by_hash(session: AsyncSession, token_hash: str) -> Row[Any] | None:
    stmt = select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).with_for_update()
    return (await session.execute(stmt)).first()


async def mark_rotated(session: AsyncSession, token_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.id == token_id, refresh_tokens.c.rotated_at.is_(None))
        .values(rotated_at=func.now())
        .returning(refresh_tokens.c.id)
    )
    return result.first() is not None


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def insert_api_key(
    session: AsyncSession, *, key_id: uuid.UUID, user_id: uuid.UUID, name: str, prefix: str, key_hash: str
) -> Row[Any]:
    result = await session.execute(
        insert(api_keys)
        .values(id=key_id, user_id=user_id, name=name, prefix=prefix, key_hash=key_hash)
        .returning(api_keys)
    )
    return result.one()


async def list_api_keys(session: AsyncSession, user_id: uuid.UUID) -> list[Row[Any]]:
    stmt = (
        select(api_keys)
        .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
        .order_by(api_keys.c.created_at.desc())
    )
    return list((await session.execute(stmt)).all())


async def revoke_api_key(session: AsyncSession, *, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(api_keys.c.id)
    )
    return result.first() is not None


async def user_by_api_key(session: AsyncSession, key_hash: str) -> Row[Any] | None:
    stmt = (
        select(users)
        .join(api_keys, api_keys.c.user_id == users.c.id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None), users.c.deleted_at.is_(None))
    )
    return (await session.execute(stmt)).first()
