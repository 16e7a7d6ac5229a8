"""FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.catalog import ModelSpec
from genimage_common.database import SessionMaker
from genimage_common.errors import Forbidden, Unauthorized
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.storage import ObjectStore

from . import identity
from .settings import GatewaySettings


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


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(_services)]


async def _session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]

_bearer = HTTPBearer(auto_error=False, description="An access token (JWT) or an API key (`gi_...`)")


async def _current_user(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> identity.User:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    if len(credentials.credentials) > 4096:
        raise Unauthorized("invalid bearer token")
    async with services.sessions() as session:
        return await identity.authenticate(session, services.settings, credential=credentials.credentials)


CurrentUser = Annotated[identity.User, Depends(_current_user)]


async def _admin(user: CurrentUser) -> identity.User:
    if user.role != "admin":
        raise Forbidden("admin role required")
    return user


AdminUser = Annotated[identity.User, Depends(_admin)]
