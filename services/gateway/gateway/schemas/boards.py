"""Boards: the user's collections of images."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class BoardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["Lighthouses"])


class BoardOut(BaseModel):
    id: uuid.UUID
    name: str
    image_count: int = Field(description="Images on the board, not counting those in the trash")
    created_at: datetime
