"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.catalog import ModelSpec
from genimage_common.contracts.clients import BillingClient, GalleryClient
from genimage_common.database import SessionMaker
from genimage_common.errors import DomainError, Forbidden, Unauthorized
from genimage_common.pricing import Pricing
from genimage_common.storage import ObjectStore
from genimage_common.unit_of_work import UnitOfWork

from . import identity
from .presenters import Links
from .settings import GatewaySettings

if TYPE_CHECKING:
    from .idempotency import Unsettled
    from .oidc import OidcVerifier
    from .ratelimit import InflightSlots, RateLimiter
    from .uploads import UploadService
    from .webhooks import WebhookSender


@dataclass
class Services:
    """Created once by the lifespan, kept on ``app.state.services``."""

    settings: GatewaySettings
    sessions: SessionMaker
    # Every transaction of the gateway: its commit wakes the outbox relay when it wrote events.
    uow: UnitOfWork
    broker: NatsBroker
    billing: BillingClient
    gallery: GalleryClient
    store: ObjectStore
    pricing: Pricing
    catalog: dict[str, ModelSpec]
    limiter: RateLimiter
    inflight: InflightSlots
    uploads: UploadService
    oidc: OidcVerifier | None = None
    webhook_sender: WebhookSender | None = None
    # Idempotency keys whose outcome or release this replica could not store while the
    # database was away: stored as soon as it is back (``idempotency``).
    unsettled_keys: dict[tuple[uuid.UUID, str], Unsettled] = field(default_factory=dict)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(_services)]


async def _transaction(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.uow.transaction() as session:
        yield session


async def _reader(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.uow.read() as session:
        yield session


# The route's unit of work: committed when the route returns and before its response is sent
# (scope "function": a failed commit is the request's failure, never a success already sent),
# rolled back when it raises.
SessionDep = Annotated[AsyncSession, Depends(_transaction, scope="function")]
# For routes that only read.
ReaderDep = Annotated[AsyncSession, Depends(_reader, scope="function")]
# Where the links of a response point (the one base-URL rule: ``presenters.Links``).
LinksDep = Annotated[Links, Depends(Links.of_request)]

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
