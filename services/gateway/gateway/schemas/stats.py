"""The user's totals."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
