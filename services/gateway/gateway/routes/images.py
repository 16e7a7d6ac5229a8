"""``/v1/images``: the user's gallery, favorites, publishing, trash."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime

from genimage_common.contracts.gallery import ImageQuery, ImageRef, SetFavorite, SetPublished

from .. import presenters
from ..deps import CurrentUser, LinksDep, ServicesDep
from ..schemas.common import Page
from ..schemas.images import GalleryImageOut
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.get("", response_model=Page[GalleryImageOut], responses=errors(401, 404, 422, 503))
async def list_images(
    user: CurrentUser,
    services: ServicesDep,
    links: LinksDep,
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
) -> Page[GalleryImageOut]:
    """The user's gallery, newest first; every filter narrows the list."""
    query = ImageQuery(
        user_id=user.id,
        limit=limit,
        cursor=cursor,
        favorite=favorite,
        published=published,
        kind=kind,
        board=board,
        since=since,
        until=until,
        q=q,
        trashed=trashed,
    )
    page = await services.gallery.list_images(query)
    return Page(items=[presenters.image(i, links) for i in page.items], next_cursor=page.next_cursor)


@router.get("/{image_id}", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def get_image(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """One image, also while it is in the trash (``trashed_at`` set)."""
    found = await services.gallery.get_image(ImageRef(user_id=user.id, image_id=image_id))
    return presenters.image(found, links)


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
    found = await services.gallery.get_image(ImageRef(user_id=user.id, image_id=image_id))
    key = found.thumbnail_key if variant == "thumbnail" else found.object_key
    url = services.store.presigned_get(key, expires_s=services.settings.presign_ttl_s)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private, no-store"})


@router.put("/{image_id}/favorite", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def favorite(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Idempotent."""
    found = await services.gallery.set_favorite(SetFavorite(user_id=user.id, image_id=image_id, favorite=True))
    return presenters.image(found, links)


@router.delete("/{image_id}/favorite", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def unfavorite(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Idempotent."""
    found = await services.gallery.set_favorite(SetFavorite(user_id=user.id, image_id=image_id, favorite=False))
    return presenters.image(found, links)


@router.put("/{image_id}/publish", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def publish(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Show the image in the public community feed (idempotent)."""
    found = await services.gallery.set_published(SetPublished(user_id=user.id, image_id=image_id, published=True))
    return presenters.image(found, links)


@router.delete("/{image_id}/publish", response_model=GalleryImageOut, responses=errors(401, 404, 409, 503))
async def unpublish(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Take the image out of the community feed (idempotent)."""
    found = await services.gallery.set_published(SetPublished(user_id=user.id, image_id=image_id, published=False))
    return presenters.image(found, links)


@router.delete("/{image_id}", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def trash(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Move to the trash (idempotent): hidden from lists and the feed, restorable until purged."""
    found = await services.gallery.trash_image(ImageRef(user_id=user.id, image_id=image_id))
    return presenters.image(found, links)


@router.post("/{image_id}/restore", response_model=GalleryImageOut, responses=errors(401, 404, 503))
async def restore(image_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep) -> GalleryImageOut:
    """Take the image out of the trash (idempotent)."""
    found = await services.gallery.restore_image(ImageRef(user_id=user.id, image_id=image_id))
    return presenters.image(found, links)
