"""Accounts, sessions and API keys: signup, login, refresh (rotating), logout, authenticate
(access JWT, API key, or a token of the configured OIDC issuer)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import Conflict, NotFound, Unauthorized
from genimage_common.events import UserRegistered, make_event, utcnow
from genimage_common.ids import new_id, transition_event_id
from genimage_common.outbox import enqueue
from genimage_common.streams import IDENTITY

from . import repository as repo
from . import security
from .models import outbox
from .oidc import OidcVerifier
from .settings import GatewaySettings

SOURCE = "genimage/gateway"
# Stored as the password hash of accounts that sign in elsewhere: no password matches it.
NO_PASSWORD = "!external"  # noqa: S105


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    role: str
    created_at: Any


@dataclass(frozen=True)
class Principal:
    """Who made a request, and with what credential."""

    user: User
    method: Literal["jwt", "api_key", "oidc"]
    api_key_id: uuid.UUID | None = None
    # True when this request created the account (first sight of an OIDC subject).
    created: bool = False


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def _user(row: Any) -> User:
    return User(row.id, row.email, row.role, row.created_at)


def _role_for(settings: GatewaySettings, email: str) -> str:
    return "admin" if settings.admin_email and email.lower() == settings.admin_email.lower() else "user"


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


async def _create_user(session: AsyncSession, *, email: str, password_hash: str, role: str) -> User | None:
    """The user row and, in the same transaction, its ``identity.user_registered`` event;
    None when the email is taken."""
    user_id = new_id()
    if not await repo.insert_user(session, user_id=user_id, email=email, password_hash=password_hash, role=role):
        return None
    user = _user(await repo.user_by_id(session, user_id))
    event = make_event(
        UserRegistered(user_id=user.id, email=user.email, registered_at=user.created_at),
        source=SOURCE,
        subject=user.id,
        event_id=transition_event_id(user.id, "registered"),
    )
    await enqueue(session, outbox, event, stream=IDENTITY)
    return user


async def signup(session: AsyncSession, settings: GatewaySettings, *, email: str, password: str) -> tuple[User, Tokens]:
    if await repo.user_by_email(session, email) is not None:
        raise Conflict("an account with this email already exists")
    # argon2id takes tens of milliseconds of CPU on purpose: off the event loop.
    password_hash = await asyncio.to_thread(security.hash_password, password)
    user = await _create_user(session, email=email, password_hash=password_hash, role=_role_for(settings, email))
    if user is None:
        raise Conflict("an account with this email already exists")
    return user, await _issue(session, settings, user, uuid.uuid4())


async def login(session: AsyncSession, settings: GatewaySettings, *, email: str, password: str) -> tuple[User, Tokens]:
    row = await repo.user_by_email(session, email)
    ok = await asyncio.to_thread(security.verify_password, row.password_hash if row else None, password)
    if not ok or row is None:
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


async def authenticate(
    session: AsyncSession, settings: GatewaySettings, *, credential: str, oidc: OidcVerifier | None
) -> Principal:
    """A bearer credential is an API key (``gi_`` prefix), an access JWT of ours, or a token
    of the configured OIDC issuer."""
    if credential.startswith(security.API_KEY_PREFIX):
        row = await repo.user_by_api_key(session, security.sha256(credential))
        if row is None:
            raise Unauthorized("invalid or revoked API key")
        await repo.touch_api_key(session, row.api_key_id)
        return Principal(_user(row), "api_key", api_key_id=row.api_key_id)
    if oidc is not None and oidc.accepts(security.unverified_issuer(credential)):
        claims = await oidc.verify(credential)
        user, created = await user_for_external(session, settings, issuer=oidc.issuer, claims=claims)
        return Principal(user, "oidc", created=created)
    claims = security.decode_access_token(credential, secret=settings.jwt_secret, issuer=settings.jwt_issuer)
    try:
        user_id = uuid.UUID(claims["sub"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise Unauthorized("invalid access token") from exc
    row = await repo.user_by_id(session, user_id)
    if row is None:
        raise Unauthorized("unknown user")
    return Principal(_user(row), "jwt")


async def user_for_external(
    session: AsyncSession, settings: GatewaySettings, *, issuer: str, claims: dict[str, Any]
) -> tuple[User, bool]:
    """The user an external subject maps to, created on first sight (with its
    ``user_registered`` event, so it gets the signup credits like everyone else)."""
    subject = str(claims["sub"])[:255]
    row = await repo.user_by_external_identity(session, issuer=issuer, subject=subject)
    if row is not None:
        return _user(row), False
    # Two first requests of the same subject at once: one creates, the other waits and finds it.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"oidc:{security.fingerprint(issuer, subject)}"}
    )
    row = await repo.user_by_external_identity(session, issuer=issuer, subject=subject)
    if row is not None:
        return _user(row), False
    email = claims.get("email")
    verified = claims.get("email_verified") is True
    user: User | None = None
    if isinstance(email, str) and verified and 3 <= len(email) <= 320 and "@" in email:
        existing = await repo.user_by_email(session, email)
        if existing is not None:
            # The issuer vouches for this address: the same person as the local account.
            user = _user(existing)
        else:
            user = await _create_user(session, email=email, password_hash=NO_PASSWORD, role=_role_for(settings, email))
    if user is None:
        # No verified address we can use: a placeholder that cannot collide or receive mail.
        placeholder = f"{security.fingerprint(issuer, subject)[:24]}@oidc.invalid"
        user = await _create_user(session, email=placeholder, password_hash=NO_PASSWORD, role="user")
        if user is None:
            raise Conflict("could not create the account")
    await repo.insert_external_identity(session, issuer=issuer, subject=subject, user_id=user.id)
    return user, True


MAX_API_KEYS = 100


async def create_api_key(session: AsyncSession, *, user_id: uuid.UUID, name: str) -> tuple[Any, str]:
    if len(await repo.list_api_keys(session, user_id)) >= MAX_API_KEYS:
        raise Conflict(f"at most {MAX_API_KEYS} live API keys; revoke one first")
    key = security.new_api_key()
    row = await repo.insert_api_key(
        session, key_id=new_id(), user_id=user_id, name=name, prefix=key[:10], key_hash=security.sha256(key)
    )
    return row, key


async def revoke_api_key(session: AsyncSession, *, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    if not await repo.revoke_api_key(session, user_id=user_id, key_id=key_id):
        raise NotFound("API key not found")
