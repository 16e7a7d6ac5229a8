"""SQL of the identity schema. No commits, no publishing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import (
    api_keys,
    external_identities,
    idempotency_keys,
    refresh_tokens,
    users,
    webhook_deliveries,
    webhook_subscriptions,
)


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
    """The user row plus ``api_key_id`` and ``api_key_last_used_at``, for a live key."""
    stmt = (
        select(users, api_keys.c.id.label("api_key_id"), api_keys.c.last_used_at.label("api_key_last_used_at"))
        .join(api_keys, api_keys.c.user_id == users.c.id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None), users.c.deleted_at.is_(None))
    )
    return (await session.execute(stmt)).first()


async def touch_api_key(session: AsyncSession, key_id: uuid.UUID, *, every_s: int = 60) -> None:
    """Record use, at most once per ``every_s`` (a write per request would be wasteful)."""
    await session.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            or_(
                api_keys.c.last_used_at.is_(None),
                api_keys.c.last_used_at < func.now() - text(f"interval '{int(every_s)} seconds'"),
            ),
        )
        .values(last_used_at=func.now())
    )


# --- external identities --------------------------------------------------------------------


async def user_by_external_identity(session: AsyncSession, *, issuer: str, subject: str) -> Row[Any] | None:
    stmt = (
        select(users)
        .join(external_identities, external_identities.c.user_id == users.c.id)
        .where(
            external_identities.c.issuer == issuer,
            external_identities.c.subject == subject,
            users.c.deleted_at.is_(None),
        )
    )
    return (await session.execute(stmt)).first()


async def insert_external_identity(session: AsyncSession, *, issuer: str, subject: str, user_id: uuid.UUID) -> bool:
    result = await session.execute(
        insert(external_identities)
        .values(issuer=issuer, subject=subject, user_id=user_id)
        .on_conflict_do_nothing()
        .returning(external_identities.c.user_id)
    )
    return result.first() is not None


# --- idempotency keys -------------------------------------------------------------------------


async def claim_idempotency_key(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, fingerprint: str, ttl_s: int
) -> bool:
    """Insert the in-flight record; False when the key exists (live or expired)."""
    result = await session.execute(
        insert(idempotency_keys)
        .values(
            user_id=user_id,
            key=key,
            fingerprint=fingerprint,
            expires_at=func.now() + text(f"interval '{int(ttl_s)} seconds'"),
        )
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.key)
    )
    return result.first() is not None


async def get_idempotency_key(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> Row[Any] | None:
    stmt = (
        select(
            idempotency_keys,
            (idempotency_keys.c.expires_at <= func.now()).label("expired"),
            func.extract("epoch", func.now() - idempotency_keys.c.locked_at).label("locked_for_s"),
        )
        .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)
        .with_for_update()
    )
    return (await session.execute(stmt)).first()


async def relock_idempotency_key(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, fingerprint: str, ttl_s: int
) -> None:
    """Take over an expired key, or one whose holder died: it becomes a fresh in-flight record."""
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)
        .values(
            fingerprint=fingerprint,
            status_code=None,
            response_body=None,
            content_type=None,
            locked_at=func.now(),
            created_at=func.now(),
            expires_at=func.now() + text(f"interval '{int(ttl_s)} seconds'"),
        )
    )


async def complete_idempotency_key(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, status_code: int, body: Any, content_type: str
) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)
        .values(status_code=status_code, response_body=body, content_type=content_type)
    )


async def release_idempotency_key(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> None:
    await session.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.user_id == user_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.status_code.is_(None),
        )
    )


async def purge_idempotency_keys(session: AsyncSession, *, limit: int = 1000) -> int:
    """Forget keys past their retention, a bounded batch at a time."""
    result = await session.execute(
        text(
            "DELETE FROM identity.idempotency_keys WHERE ctid IN "
            "(SELECT ctid FROM identity.idempotency_keys WHERE expires_at <= now() LIMIT :limit)"
        ),
        {"limit": limit},
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


# --- webhooks ---------------------------------------------------------------------------------


async def insert_webhook_subscription(
    session: AsyncSession, *, generation_id: uuid.UUID, user_id: uuid.UUID, url: str, events: list[str]
) -> None:
    await session.execute(
        insert(webhook_subscriptions)
        .values(generation_id=generation_id, user_id=user_id, url=url, events=events)
        .on_conflict_do_nothing()
    )


async def webhook_subscription(session: AsyncSession, generation_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(webhook_subscriptions).where(webhook_subscriptions.c.generation_id == generation_id)
    return (await session.execute(stmt)).first()


async def insert_webhook_delivery(
    session: AsyncSession,
    *,
    delivery_id: uuid.UUID,
    generation_id: uuid.UUID,
    user_id: uuid.UUID,
    url: str,
    event_type: str,
    payload: dict[str, Any],
) -> bool:
    result = await session.execute(
        insert(webhook_deliveries)
        .values(
            id=delivery_id,
            generation_id=generation_id,
            user_id=user_id,
            url=url,
            event_type=event_type,
            payload=payload,
        )
        .on_conflict_do_nothing()
        .returning(webhook_deliveries.c.id)
    )
    return result.first() is not None


async def lease_due_deliveries(session: AsyncSession, *, limit: int, lease_s: float) -> list[Row[Any]]:
    """Due deliveries, locked against other replicas and pushed ``lease_s`` into the future
    so that nobody else picks them while this replica sends them. The attempt is counted
    here, as it starts: a replica that dies mid-delivery has still used it up, so a delivery
    that kills its sender cannot be retried forever."""
    due = (
        select(webhook_deliveries.c.id)
        .where(webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= func.now())
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id.in_(due.scalar_subquery()))
        .values(
            attempts=webhook_deliveries.c.attempts + 1,
            last_attempt_at=func.now(),
            next_attempt_at=func.now() + text(f"interval '{float(lease_s)} seconds'"),
        )
        .returning(webhook_deliveries)
    )
    return list(result.all())


async def record_delivery_attempt(
    session: AsyncSession,
    *,
    delivery_id: uuid.UUID,
    status: str,
    status_code: int | None,
    error: str | None,
    retry_in_s: float | None,
    attempts: int | None = None,
) -> None:
    """The outcome of the attempt counted by ``lease_due_deliveries`` (``attempts``: to
    correct that count)."""
    values: dict[str, Any] = {
        "status": status,
        "last_status_code": status_code,
        "last_error": error[:500] if error else None,
    }
    if status == "delivered":
        values["delivered_at"] = func.now()
    if retry_in_s is not None:
        values["next_attempt_at"] = func.now() + text(f"interval '{float(retry_in_s)} seconds'")
    if attempts is not None:
        values["attempts"] = attempts
    await session.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values))


async def list_webhook_deliveries(
    session: AsyncSession, *, user_id: uuid.UUID, generation_id: uuid.UUID, limit: int = 100
) -> list[Row[Any]]:
    stmt = (
        select(webhook_deliveries)
        .where(webhook_deliveries.c.user_id == user_id, webhook_deliveries.c.generation_id == generation_id)
        .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).all())
