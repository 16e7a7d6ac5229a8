"""The event catalog (ARCHITECTURE.md §3) as pydantic models, in a CloudEvents 1.0 envelope.

Every ``data`` model names its type (``<domain>.<event>``); the envelope's ``type`` is
``genimage.<domain>.<event>.v1`` and its NATS subject ``<domain>.<event>.<user_id>``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from .ids import new_id
from .subjects import event_subject

UtcDatetime = Annotated[
    datetime,
    PlainSerializer(
        lambda d: d.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        return_type=str,
    ),
]


def utcnow() -> datetime:
    """Now, at the millisecond precision events carry (so a parsed event equals its original)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class EventData(BaseModel):
    """Base of every event payload; all carry the owning user."""

    model_config = ConfigDict(frozen=True)

    name: ClassVar[str]  # "<domain>.<event>"
    user_id: uuid.UUID

    @classmethod
    def event_type(cls) -> str:
        return f"genimage.{cls.name}.v1"

    def subject(self) -> str:
        return event_subject(self.name, self.user_id)


D = TypeVar("D", bound=EventData)


class Event(BaseModel, Generic[D]):
    """CloudEvents 1.0, structured JSON mode."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID
    type: str
    source: str
    subject: str
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: D

    @property
    def nats_subject(self) -> str:
        return self.data.subject()


def make_event(data: D, *, source: str, subject: str | uuid.UUID, event_id: uuid.UUID | None = None) -> Event[D]:
    """Wrap ``data``; pass ``event_id`` for a state transition so a re-publish dedupes."""
    return Event[type(data)](  # type: ignore[misc]
        id=event_id or new_id(),
        type=data.event_type(),
        source=source,
        subject=str(subject),
        time=utcnow(),
        data=data,
    )


# --- identity -----------------------------------------------------------------------------


class UserRegistered(EventData):
    name: ClassVar[str] = "identity.user_registered"
    email: str
    registered_at: UtcDatetime


class UserDeleted(EventData):
    name: ClassVar[str] = "identity.user_deleted"


# --- generation ---------------------------------------------------------------------------

GenerationKind = Literal["image", "video"]
OutputFormat = Literal["png", "jpeg", "webp"]


class GenerationRequested(EventData):
    name: ClassVar[str] = "generation.requested"
    generation_id: uuid.UUID
    kind: GenerationKind
    prompt: str
    negative_prompt: str | None = None
    model: str
    width: int
    height: int
    n: int = 1
    seed: int
    aspect_ratio: str | None = None
    duration_s: float | None = None
    input_image_ids: list[uuid.UUID] = Field(default_factory=list)
    output_format: OutputFormat = "png"
    watermark: bool = False
    cost: int
    hold_expires_at: UtcDatetime
    requested_at: UtcDatetime | None = None


class GenerationCancelRequested(EventData):
    name: ClassVar[str] = "generation.cancel_requested"
    generation_id: uuid.UUID


class GenerationStarted(EventData):
    name: ClassVar[str] = "generation.started"
    generation_id: uuid.UUID
    provider: str
    attempt: int = 1


class GenerationProgress(EventData):
    name: ClassVar[str] = "generation.progress"
    generation_id: uuid.UUID
    progress: float = Field(ge=0, le=1)
    stage: str


class Output(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_id: uuid.UUID
    index: int
    object_key: str
    thumbnail_key: str
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str
    duration_s: float | None = None


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True)

    queue_ms: int
    run_ms: int


class GenerationCompleted(EventData):
    name: ClassVar[str] = "generation.completed"
    generation_id: uuid.UUID
    outputs: list[Output]
    provider: str
    model: str
    seed: int
    timings: Timings
    provider_cost_usd: float | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool = False


class GenerationFailed(EventData):
    name: ClassVar[str] = "generation.failed"
    generation_id: uuid.UUID
    error: ErrorInfo
    attempts: int = 1


class GenerationCanceled(EventData):
    name: ClassVar[str] = "generation.canceled"
    generation_id: uuid.UUID


# --- billing ------------------------------------------------------------------------------


class AccountOpened(EventData):
    name: ClassVar[str] = "billing.account_opened"


class CreditsGranted(EventData):
    name: ClassVar[str] = "billing.credits_granted"
    amount: int
    reason: Literal["signup", "purchase", "admin", "promo"]
    reference: str
    balance: int


class CreditsReserved(EventData):
    name: ClassVar[str] = "billing.credits_reserved"
    generation_id: uuid.UUID
    amount: int
    expires_at: UtcDatetime
    balance: int


class CreditsCommitted(EventData):
    name: ClassVar[str] = "billing.credits_committed"
    generation_id: uuid.UUID
    amount: int
    released: int
    balance: int


class CreditsRefunded(EventData):
    name: ClassVar[str] = "billing.credits_refunded"
    generation_id: uuid.UUID
    amount: int
    reason: Literal["failed", "canceled", "expired"]
    balance: int


# --- gallery ------------------------------------------------------------------------------


class _ImageEvent(EventData):
    image_id: uuid.UUID


class ImageFavorited(_ImageEvent):
    name: ClassVar[str] = "gallery.image_favorited"


class ImageUnfavorited(_ImageEvent):
    name: ClassVar[str] = "gallery.image_unfavorited"


class ImagePublished(_ImageEvent):
    name: ClassVar[str] = "gallery.image_published"


class ImageUnpublished(_ImageEvent):
    name: ClassVar[str] = "gallery.image_unpublished"


class ImageDeleted(_ImageEvent):
    name: ClassVar[str] = "gallery.image_deleted"
    object_keys: list[str]


class ImageRestored(_ImageEvent):
    name: ClassVar[str] = "gallery.image_restored"


class ImageTrashed(_ImageEvent):
    """Moved to the trash (``DELETE /v1/images/{id}``); ``image_deleted`` follows at purge."""

    name: ClassVar[str] = "gallery.image_trashed"


class _BoardEvent(EventData):
    board_id: uuid.UUID


class BoardCreated(_BoardEvent):
    name: ClassVar[str] = "gallery.board_created"
    board_name: str


class BoardRenamed(_BoardEvent):
    name: ClassVar[str] = "gallery.board_renamed"
    board_name: str


class BoardDeleted(_BoardEvent):
    name: ClassVar[str] = "gallery.board_deleted"


class BoardImageAdded(_BoardEvent):
    name: ClassVar[str] = "gallery.board_image_added"
    image_id: uuid.UUID


class BoardImageRemoved(_BoardEvent):
    name: ClassVar[str] = "gallery.board_image_removed"
    image_id: uuid.UUID


CATALOG: dict[str, type[EventData]] = {
    cls.event_type(): cls
    for cls in (
        UserRegistered,
        UserDeleted,
        GenerationRequested,
        GenerationCancelRequested,
        GenerationStarted,
        GenerationProgress,
        GenerationCompleted,
        GenerationFailed,
        GenerationCanceled,
        AccountOpened,
        CreditsGranted,
        CreditsReserved,
        CreditsCommitted,
        CreditsRefunded,
        ImageFavorited,
        ImageUnfavorited,
        ImagePublished,
        ImageUnpublished,
        ImageDeleted,
        ImageRestored,
        ImageTrashed,
        BoardCreated,
        BoardRenamed,
        BoardDeleted,
        BoardImageAdded,
        BoardImageRemoved,
    )
}


class UnknownEventType(ValueError):
    pass


def parse_event(raw: bytes | str | dict[str, Any]) -> Event[Any]:
    """Decode any catalog event into its typed model (unknown types raise ``UnknownEventType``)."""
    envelope = raw if isinstance(raw, dict) else json.loads(raw)
    data_cls = CATALOG.get(envelope.get("type", ""))
    if data_cls is None:
        raise UnknownEventType(envelope.get("type"))
    return Event[data_cls].model_validate(envelope)  # type: ignore[valid-type]
