"""Accounts, sessions and API keys: signup, login, refresh (rotating), logout, authenticate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import Conflict, NotFound, Unauthorized
from genimage_common.events import UserRegistered, make_event, utcnow
from genimage_common.ids import new_id, transition_event_id
from genimage_common.outbox import enqueue
from genimage_common.streams import IDENTITY

from . import repository as repo
from . import security
from .models import outbox
from .settings import GatewaySettings

SOURCE = "genimage/gateway"


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    role: str
    created_at: Any


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def _user(row: Any) -> User:
    return User(row.id, row.email, row.role, row.created_at)


async def _issue(session: AsyncSession, settings: GatewaySettings, user: User, family_id: uuid.UUID) -> Tokens:
    refresh = security.new_refresh_token()
    await repo.insert_refresh_token(
        session,
        user_id=user.id,
        family_id=family_id,
        token_hash=security.sha256(refresh),
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_s),
    )
    access = security.issue_access_token(
        user_id=user.id,
        role=user.role,
        secret=settings.jwt_secret,
        issuer=settings.jwt_issuer,
        ttl_s=settings.access_token_ttl_s,
    )
    return Tokens(access, refresh, settings.access_token_ttl_s)


async def signup(session: AsyncSession, settings: GatewaySettings, *, email: str, password: str) -> tuple[User, Tokens]:
    """Creates the user and, in the same transaction, its ``identity.user_registered`` event."""
    if await repo.user_by_email(session, email) is not None:
        raise Conflict("an account with this email already exists")
    user_id = new_id()
    role = "admin" if settings.admin_email and email.lower() == settings.admin_email.lower() else "user"
    if not await repo.insert_user(
        session, user_id=user_id, email=email, password_hash=security.hash_password(password), role=role
    ):
        raise Conflict("an account with this email already exists")
    row = await repo.user_by_id(session, user_id)
    user = _user(row)
    event = make_event(
        UserRegistered(user_id=user.id, email=user.email, registered_at=user.created_at),
        source=SOURCE,
        subject=user.id,
        event_id=transition_event_id(user.id, "registered"),
    )
    await enqueue(session, outbox, event, stream=IDENTITY)
    return user, await _issue(session, settings, user, uuid.uuid4())


async def login(session: AsyncSession, settings: GatewaySettings, *, email: str, password: str) -> tuple[User, Tokens]:
    row = await repo.user_by_email(session, email)
    if not security.verify_password(row.password_hash if row else None, password) or row is None:
        raise Unauthorized("wrong email or password")
    user = _user(row)
    return user, await _issue(session, settings, user, uuid.uuid4())


async def refresh(session: AsyncSession, settings: GatewaySettings, *, refresh_token: str) -> Tokens:
    """Rotate: the presented token is spent; presenting a spent token revokes its whole family."""
    row = await repo.refresh_token_by_hash(session, security.sha256(refresh_token))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("invalid refresh token")
    if row.rotated_at is not None or not await repo.mark_rotated(session, row.id):
        await repo.revoke_family(session, row.family_id)
        raise Unauthorized("refresh token reused; all sessions of this login were revoked", reuse_detected=True)
    user_row = await repo.user_by_id(session, row.user_id)
    if user_row is None:
        raise Unauthorized("invalid refresh token")
    return await _issue(session, settings, _user(user_row), row.family_id)


async def logout(session: AsyncSession, *, refresh_token: str) -> None:
    row = await repo.refresh_token_by_hash(session, security.sha256(refresh_token))
    if row is not None:
        await repo.revoke_family(session, row.family_id)


async def authenticate(session: AsyncSession, settings: GatewaySettings, *, credential: str) -> User:
    """A bearer credential is an API key (``gi_`` prefix) or an access JWT."""
    if credential.startswith(security.API_KEY_PREFIX):
        row = await repo.user_by_api_key(session, security.sha256(credential))
        if row is None:
            raise Unauthorized("invalid or revoked API key")
        return _user(row)
    claims = security.decode_access_token(credential, secret=settings.jwt_secret, issuer=settings.jwt_issuer)
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError as exc:
        raise Unauthorized("invalid access token") from exc
    row = await repo.user_by_id(session, user_id)
    if row is None:
        raise Unauthorized("unknown user")
    return _user(row)


async def create_api_key(session: AsyncSession, *, user_id: uuid.UUID, name: str) -> tuple[Any, str]:
    key = security.new_api_key()
    row = await repo.insert_api_key(
        session, key_id=new_id(), user_id=user_id, name=name, prefix=key[:10], key_hash=security.sha256(key)
    )
    return row, key


async def revoke_api_key(session: AsyncSession, *, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    if not await repo.revoke_api_key(session, user_id=user_id, key_id=key_id):
        raise NotFound("API key not found")
