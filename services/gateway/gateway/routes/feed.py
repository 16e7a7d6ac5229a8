"""``/v1/feed``: the public community feed."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from genimage_common.contracts.gallery import FeedRequest, PublicImageRef

from .. import presenters
from ..deps import LinksDep, ServicesDep
from ..schemas.common import Page
from ..schemas.images import FeedImageOut
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/feed", tags=["feed"])


@router.get("", response_model=Page[FeedImageOut], responses=errors(422, 503))
async def feed(
    services: ServicesDep,
    links: LinksDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    kind: Literal["image", "video"] | None = None,
) -> Page[FeedImageOut]:
    """The public community feed: published images of all users, most recently published first.
    No authentication; no owner, email or private field is shown."""
    page = await services.gallery.feed(FeedRequest(limit=limit, cursor=cursor, kind=kind))
    return Page(items=[presenters.feed_image(i, links) for i in page.items], next_cursor=page.next_cursor)


@router.get(
    "/{image_id}/content",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "Redirect to a short-lived presigned URL"}, **errors(404, 503)},
)
async def feed_content(
    image_id: uuid.UUID, services: ServicesDep, variant: Literal["original", "thumbnail"] = "original"
) -> RedirectResponse:
    """The content of a published image (404 once it is unpublished or trashed)."""
    found = await services.gallery.get_published_image(PublicImageRef(image_id=image_id))
    key = found.thumbnail_key if variant == "thumbnail" else found.object_key
    url = services.store.presigned_get(key, expires_s=services.settings.presign_ttl_s)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
