"""``/v1/me`` and ``/v1/api-keys``: you, your credits and your API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from genimage_common.contracts.billing import BalanceRequest

from .. import identity, presenters, repository
from ..deps import CurrentUser, ReaderDep, ServicesDep, SessionDep
from ..schemas.common import Page
from ..schemas.identity import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, MeOut
from .responses import errors

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/me", response_model=MeOut, responses=errors(401, 429, 503))
async def me(user: CurrentUser, services: ServicesDep) -> MeOut:
    """Who you are, your role and your credits."""
    balance = await services.billing.balance(BalanceRequest(user_id=user.id))
    return MeOut(user=presenters.user(user), credits=presenters.credits(balance))


@router.post(
    "/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=errors(401, 409, 422, 429)
)
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    """The key is in this response only; it is stored hashed."""
    row, key = await identity.create_api_key(session, user_id=user.id, name=body.name)
    return presenters.created_api_key(row, key)


@router.get("/api-keys", response_model=Page[ApiKeyOut], responses=errors(401, 429))
async def list_api_keys(user: CurrentUser, session: ReaderDep) -> Page[ApiKeyOut]:
    """Your live API keys (their prefix only), newest first."""
    rows = await repository.list_api_keys(session, user.id)
    return Page(items=[presenters.api_key(r) for r in rows], next_cursor=None)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 422, 429))
async def revoke_api_key(key_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> None:
    """Revoke a key: it stops working at once."""
    await identity.revoke_api_key(session, user_id=user.id, key_id=key_id)
