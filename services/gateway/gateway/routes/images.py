from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime

from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from .. import views
from ..deps import CurrentUser, ServicesDep
from ..gallery_schemas import GalleryImageOut
from ..schemas import Page
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/images", tags=["images"])


async def gallery(services: ServicesDep, verb: str, payload: dict[str, Any]) -> Any:
    return await rpc_call(services.broker, rpc("gallery", verb), payload, timeout=services.settings.rpc_timeout_s)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("", response_model=Page[GalleryImageOut], responses=errors(401, 404, 422, 503))
async def list_images(
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    favorite: bool | None = None,
    published: bool | None = None,
    kind: Literal["image", "video"] | None = None,
    board: Annotated[uuid.UUID | None, Query(description="Only the images on this board")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Created at or after (RFC 3339)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Created before (RFC 3339)")] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description='Full-text search of the prompt (web search syntax: words, "phrases", -not, or); '
            "results are ranked by relevance, then newest first",
        ),
    ] = None,
    trashed: Annotated[bool, Query(description="List the trash instead")] = False,
) -> dict:
    """The user's gallery, newest first; every filter narrows the list."""
    page = await gallery(
        services,
        "list_images",
        {
            "user_id": str(user.id),
            "limit": limit,
            "cursor": cursor,
            "favorite": favorite,
            "published": published,
            "kind": kind,
            "board": str(board) if board else None,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "q": q,
            "trashed": trashed,
        },
    )
    return {"items": [views.image(i, base_url(request)) for i in page["items"]], "next_cursor": page["next_cursor"]}


@router.get("/{image_id}", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def get_image(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """One image, also while it is in the trash (``trashed_at`` set)."""
    found = await gallery(services, "get_image", {"user_id": str(user.id), "image_id": str(image_id)})
    return views.image(found, base_url(request))


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
    found = await gallery(services, "get_image", {"user_id": str(user.id), "image_id": str(image_id)})
    key = found["thumbnail_key"] if variant == "thumbnail" else found["object_key"]
    url = services.store.presigned_get(key, expires_s=services.settings.presign_ttl_s)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private, no-store"})


async def _command(
    verb: str, image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep, **fields: Any
) -> dict:
    found = await gallery(services, verb, {"user_id": str(user.id), "image_id": str(image_id), **fields})
    return views.image(found, base_url(request))


@router.put("/{image_id}/favorite", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def favorite(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Idempotent."""
    return await _command("set_favorite", image_id, request, user, services, favorite=True)


@router.delete("/{image_id}/favorite", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def unfavorite(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Idempotent."""
    return await _command("set_favorite", image_id, request, user, services, favorite=False)


@router.put("/{image_id}/publish", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def publish(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Show the image in the public community feed (idempotent)."""
    return await _command("set_published", image_id, request, user, services, published=True)


@router.delete("/{image_id}/publish", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def unpublish(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Take the image out of the community feed (idempotent)."""
    return await _command("set_published", image_id, request, user, services, published=False)


@router.delete("/{image_id}", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def trash(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Move to the trash (idempotent): hidden from lists and the feed, restorable until purged."""
    return await _command("trash_image", image_id, request, user, services)


@router.post("/{image_id}/restore", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def restore(image_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Take the image out of the trash (idempotent)."""
    return await _command("restore_image", image_id, request, user, services)
