from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from .. import generations, views
from ..deps import CurrentUser, ServicesDep
from ..schemas import GenerationCreate, GenerationOut, Page
from .responses import errors

router = APIRouter(prefix="/v1/generations", tags=["generations"])


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=GenerationOut, responses=errors(401, 402, 422, 503)
)
async def create_generation(
    body: GenerationCreate,
    user: CurrentUser,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict:
    """Queue a generation. Credits are reserved now and charged for what is delivered."""
    created = await generations.create(services, user_id=user.id, body=body, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/generations/{created['id']}"
    return created


@router.get("", response_model=Page[GenerationOut], responses=errors(401, 422, 503))
async def list_generations(
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict:
    page = await rpc_call(
        services.broker,
        rpc("gallery", "list_generations"),
        {"user_id": str(user.id), "limit": limit, "cursor": cursor},
        timeout=services.settings.rpc_timeout_s,
    )
    base = str(request.base_url).rstrip("/")
    return {"items": [views.generation(g, base) for g in page["items"]], "next_cursor": page["next_cursor"]}


@router.get("/{generation_id}", response_model=GenerationOut, responses=errors(401, 404, 503))
async def get_generation(generation_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    found = await rpc_call(
        services.broker,
        rpc("gallery", "get_generation"),
        {"user_id": str(user.id), "generation_id": str(generation_id)},
        timeout=services.settings.rpc_timeout_s,
    )
    return views.generation(found, str(request.base_url).rstrip("/"))
