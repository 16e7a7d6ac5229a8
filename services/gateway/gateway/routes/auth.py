"""``/v1/auth``: signup, login, rotating refresh tokens, logout."""

from __future__ import annotations

from fastapi import APIRouter, status

from genimage_common.errors import Unauthorized

from .. import identity, presenters, security
from ..deps import ServicesDep, SessionDep
from ..errors import RateLimited
from ..ratelimit import Policy
from ..schemas.identity import Credentials, RefreshRequest, SignupOut, TokensOut
from .responses import errors

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/signup", status_code=status.HTTP_201_CREATED, response_model=SignupOut, responses=errors(409, 422, 429))
async def signup(body: Credentials, services: ServicesDep, session: SessionDep) -> SignupOut:
    """Create an account; the signup credits follow shortly (billing grants them on the event)."""
    user, tokens = await identity.signup(session, services.settings, email=body.email, password=body.password)
    return SignupOut(
        user=presenters.user(user),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post("/login", response_model=TokensOut, responses=errors(401, 422, 429))
async def login(body: Credentials, services: ServicesDep, session: SessionDep) -> TokensOut:
    """Exchange email and password for tokens. Attempts are limited per email address."""
    settings = services.settings
    decision = await services.limiter.hit(
        Policy("login", settings.rate_limit_login, settings.rate_limit_window_s),
        security.fingerprint("login", body.email.lower())[:32],
    )
    if not decision.allowed:
        raise RateLimited(
            "too many login attempts for this account", retry_after=decision.retry_after_s, policy="login"
        )
    _, tokens = await identity.login(session, services.settings, email=body.email, password=body.password)
    return TokensOut(access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in)


@router.post("/refresh", response_model=TokensOut, responses=errors(401, 422, 429))
async def refresh(body: RefreshRequest, services: ServicesDep) -> TokensOut:
    """Exchange a refresh token for new tokens. Each refresh token works once."""
    refused: Unauthorized | None = None
    async with services.uow.transaction() as session:
        try:
            tokens = await identity.refresh(session, services.settings, refresh_token=body.refresh_token)
        except Unauthorized as exc:
            # Committed all the same: revoking a reused token's family must stick.
            refused = exc
    if refused is not None:
        raise refused
    return TokensOut(access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(422, 429))
async def logout(body: RefreshRequest, session: SessionDep) -> None:
    """Revoke the refresh token and every token of its login."""
    await identity.logout(session, refresh_token=body.refresh_token)
