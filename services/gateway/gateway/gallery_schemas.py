"""Request and response bodies of the gallery routes (images, boards, feed, stats)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import ImageOut


class GalleryImageOut(ImageOut):
    published_at: datetime | None = None
    trashed_at: datetime | None = Field(
        None, description="In the trash since; purged (for good) after the retention period"
    )
    board_ids: list[uuid.UUID] = Field(default_factory=list, description="The boards this image is on")


class BoardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["Lighthouses"])


class BoardOut(BaseModel):
    id: uuid.UUID
    name: str
    image_count: int = Field(description="Images on the board, not counting those in the trash")
    created_at: datetime


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


class GenerationCounts(BaseModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int
    total: int


class StatsOut(BaseModel):
    generations: GenerationCounts
    images: int = Field(description="Still images, not counting the trash")
    videos: int
    favorites: int
    published: int
    trashed: int
    boards: int
    credits_spent: int = Field(description="Credits committed for delivered outputs")
