from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from .. import identity, repository
from ..deps import CurrentUser, ServicesDep
from ..schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, Credits, MeOut, Page, UserOut
from .responses import errors

router = APIRouter(prefix="/v1", tags=["account"])


async def balance(services: ServicesDep, user_id: uuid.UUID) -> Credits:
    reply = await rpc_call(
        services.broker, rpc("billing", "balance"), {"user_id": str(user_id)}, timeout=services.settings.rpc_timeout_s
    )
    return Credits(**reply)


@router.get("/me", response_model=MeOut, responses=errors(401, 429, 503))
async def me(user: CurrentUser, services: ServicesDep) -> MeOut:
    """Who you are, your role and your credits."""
    return MeOut(user=UserOut(**user.__dict__), credits=await balance(services, user.id))


@router.post(
    "/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=errors(401, 409, 422, 429)
)
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, services: ServicesDep) -> ApiKeyCreated:
    """The key is in this response only; it is stored hashed."""
    async with services.sessions.begin() as session:
        row, key = await identity.create_api_key(session, user_id=user.id, name=body.name)
    return ApiKeyCreated(
        id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at, last_used_at=None, key=key
    )


@router.get("/api-keys", response_model=Page[ApiKeyOut], responses=errors(401, 429))
async def list_api_keys(user: CurrentUser, services: ServicesDep) -> Page[ApiKeyOut]:
    """Your live API keys (their prefix only), newest first."""
    async with services.sessions() as session:
        items = [
            ApiKeyOut(id=r.id, name=r.name, prefix=r.prefix, created_at=r.created_at, last_used_at=r.last_used_at)
            for r in await repository.list_api_keys(session, user.id)
        ]
    return Page(items=items, next_cursor=None)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 422, 429))
async def revoke_api_key(key_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> None:
    """Revoke a key: it stops working at once."""
    async with services.sessions.begin() as session:
        await identity.revoke_api_key(session, user_id=user.id, key_id=key_id)
