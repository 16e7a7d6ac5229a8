"""Images: in the owner's gallery, and as the public feed shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .common import examples

IMAGE_EXAMPLE = {
    "id": "6b0d4c8e-3f0a-5d1c-9e2b-7a4f1c3d5e60",
    "generation_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
    "index": 0,
    "kind": "image",
    "prompt": "a lighthouse on a cliff at sunset",
    "content_type": "image/png",
    "width": 768,
    "height": 512,
    "bytes": 412345,
    "sha256": "9f2c0e7d3b1a4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
    "duration_s": None,
    "favorite": False,
    "published": False,
    "created_at": "2026-11-22T10:00:02Z",
    "url": "https://api.genimage.dev/v1/images/6b0d4c8e-3f0a-5d1c-9e2b-7a4f1c3d5e60/content",
    "thumbnail_url": "https://api.genimage.dev/v1/images/6b0d4c8e-3f0a-5d1c-9e2b-7a4f1c3d5e60/content?variant=thumbnail",
}


class ImageOut(BaseModel):
    model_config = examples(IMAGE_EXAMPLE)

    id: uuid.UUID
    generation_id: uuid.UUID
    index: int
    kind: Literal["image", "video"] | None
    prompt: str | None
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str
    duration_s: float | None = None
    favorite: bool
    published: bool
    created_at: datetime
    url: str = Field(description="Redirects to a short-lived URL of the original")
    thumbnail_url: str


class GalleryImageOut(ImageOut):
    published_at: datetime | None = None
    trashed_at: datetime | None = Field(
        None, description="In the trash since; purged (for good) after the retention period"
    )
    board_ids: list[uuid.UUID] = Field(default_factory=list, description="The boards this image is on")


class FeedImageOut(BaseModel):
    """A published image as anyone sees it: no owner, no private field."""

    id: uuid.UUID
    kind: Literal["image", "video"] | None
    prompt: str | None
    content_type: str
    width: int
    height: int
    duration_s: float | None = None
    created_at: datetime
    published_at: datetime
    url: str = Field(description="Redirects to a short-lived URL of the original")
    thumbnail_url: str
