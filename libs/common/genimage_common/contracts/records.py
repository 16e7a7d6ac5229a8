"""The read models services hand each other, as the owning service answers them: billing's
balance and ledger lines, the gallery's generations, images and boards. Internal shapes —
an image still names its object keys — that the gateway presents to the public.

Unknown fields are ignored when parsing, so that a newer service can answer an older caller
during a rollout.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..events import ErrorInfo, Timings
from .status import GenerationStatus

Kind = Literal["image", "video"]
T = TypeVar("T")


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Page(Record, Generic[T]):
    """One page of a list, newest first; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


# --- billing ------------------------------------------------------------------------------


class Balance(Record):
    available: int
    reserved: int = Field(description="Held for generations not settled yet")


class LedgerLine(Record):
    """One transfer of the user's statement: ``amount`` is the signed change of the available
    balance, ``balance_after`` the available balance after it."""

    id: str
    type: str
    amount: int
    balance_after: int
    generation_id: uuid.UUID | None = None
    created_at: datetime


# --- gallery ------------------------------------------------------------------------------


class ImageRecord(Record):
    """An image (or video clip) of the user's gallery, in the trash or not."""

    id: uuid.UUID
    generation_id: uuid.UUID
    index: int
    kind: Kind | None
    prompt: str | None
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str
    duration_s: float | None = None
    favorite: bool
    published: bool
    published_at: datetime | None = None
    trashed_at: datetime | None = Field(None, description="In the trash since (null: not in the trash)")
    board_ids: list[uuid.UUID] = Field(default_factory=list)
    created_at: datetime
    object_key: str
    thumbnail_key: str


class GenerationRecord(Record):
    """A generation as the read model knows it; ``cost`` is what was reserved while it runs,
    then what was charged (0 once refunded)."""

    id: uuid.UUID
    status: GenerationStatus
    kind: Kind | None
    prompt: str | None
    negative_prompt: str | None = None
    model: str | None
    width: int | None
    height: int | None
    n: int | None
    seed: int | None
    output_format: str | None = None
    progress: float
    cost: int | None
    refunded: int | None = None
    provider: str | None = None
    outputs: list[ImageRecord] = Field(default_factory=list)
    error: ErrorInfo | None = None
    timings: Timings | None = None
    queue_position: int | None = None
    created_at: datetime | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None


class BoardRecord(Record):
    id: uuid.UUID
    name: str
    image_count: int = Field(description="Images on the board, not counting those in the trash")
    created_at: datetime


class PublicImage(Record):
    """A published image as anyone may see it: no owner, no generation, no private flag."""

    id: uuid.UUID
    kind: Kind | None
    prompt: str | None
    content_type: str
    width: int
    height: int
    duration_s: float | None = None
    created_at: datetime
    published_at: datetime


class PublishedImage(PublicImage):
    """A published image with its object keys (for the public content redirect)."""

    object_key: str
    thumbnail_key: str
