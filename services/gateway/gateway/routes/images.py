from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from .. import views
from ..deps import CurrentUser, ServicesDep
from ..schemas import ImageOut, Page
from .responses import errors

router = APIRouter(prefix="/v1/images", tags=["images"])


async def _gallery(services: ServicesDep, verb: str, payload: dict) -> dict:
    return await rpc_call(services.broker, rpc("gallery", verb), payload, timeout=services.settings.rpc_timeout_s)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("", response_model=Page[ImageOut], responses=errors(401, 422, 503))
async def list_images(
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    favorite: bool | None = None,
    kind: Literal["image", "video"] | None = None,
) -> dict:
    page = await _gallery(
        services,
        "list_images",
        {"user_id": str(user.id), "limit": limit, "cursor": cursor, "favorite": favorite, "kind": kind},
    )
    return {"items": [views.image(i, _base(request)) for i in page["items"]], "next_cursor": page["next_cursor"]}


@router.get("/{image_id}", response_model=ImageOut, responses=errors(401, 404, 503))
async def get_image(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    found = await _gallery(services, "get_image", {"user_id": str(user.id), "image_id": str(image_id)})
    return views.image(found, _base(request))


@router.get(
    "/{image_id}/content",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "Redirect to a short-lived presigned URL"}, **errors(401, 404, 503)},
)
async def image_content(
    image_id: uuid.UUID,
    user: CurrentUser,
    services: ServicesDep,
    variant: Literal["original", "thumbnail"] = "original",
) -> RedirectResponse:
    found = await _gallery(services, "get_image", {"user_id": str(user.id), "image_id": str(image_id)})
    key = found["thumbnail_key"] if variant == "thumbnail" else found["object_key"]
    url = services.store.presigned_get(key, expires_s=services.settings.presign_ttl_s)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private, no-store"})


async def _favorite(
    image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep, value: bool
) -> dict:
    found = await _gallery(
        services, "set_favorite", {"user_id": str(user.id), "image_id": str(image_id), "favorite": value}
    )
    return views.image(found, _base(request))


@router.put("/{image_id}/favorite", response_model=ImageOut, responses=errors(401, 404, 503))
async def favorite(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    return await _favorite(image_id, request, user, services, True)


@router.delete("/{image_id}/favorite", response_model=ImageOut, responses=errors(401, 404, 503))
async def unfavorite(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    return await _favorite(image_id, request, user, services, False)
