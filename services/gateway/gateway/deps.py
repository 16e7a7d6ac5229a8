"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.catalog import ModelSpec
from genimage_common.database import SessionMaker
from genimage_common.errors import DomainError, Forbidden, Unauthorized
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.storage import ObjectStore

from . import identity
from .settings import GatewaySettings

if TYPE_CHECKING:
    from .oidc import OidcVerifier
    from .ratelimit import InflightSlots, RateLimiter
    from .uploads import UploadService
    from .webhooks import WebhookSender


@dataclass
class Services:
    """Created once by the lifespan, kept on ``app.state.services``."""

    settings: GatewaySettings
    sessions: SessionMaker
    broker: NatsBroker
    store: ObjectStore
    relay: OutboxRelay
    pricing: Pricing
    catalog: dict[str, ModelSpec]
    limiter: RateLimiter
    inflight: InflightSlots
    uploads: UploadService
    oidc: OidcVerifier | None = None
    webhook_sender: WebhookSender | None = None


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(_services)]


async def _session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]

# Authentication itself happens once per request in the gatekeeper middleware (rate limits
# need to know who is asking); this scheme only documents it in the OpenAPI document.
_bearer = HTTPBearer(
    auto_error=False,
    description="An access token (JWT), an API key (`gi_...`) or a token of the configured OIDC issuer",
)


async def _principal(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> identity.Principal:
    principal: identity.Principal | None = getattr(request.state, "principal", None)
    if principal is not None:
        return principal
    error: DomainError | None = getattr(request.state, "auth_error", None)
    if error is not None:
        raise error
    raise Unauthorized("missing bearer token")


CurrentPrincipal = Annotated[identity.Principal, Depends(_principal)]


async def _current_user(principal: CurrentPrincipal) -> identity.User:
    return principal.user


CurrentUser = Annotated[identity.User, Depends(_current_user)]


async def _admin(user: CurrentUser) -> identity.User:
    if user.role != "admin":
        raise Forbidden("admin role required")
    return user


AdminUser = Annotated[identity.User, Depends(_admin)]
