"""Request and response bodies of the public API (what the OpenAPI document shows)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, model_validator

T = TypeVar("T")

ASPECT_RATIOS = {
    "1:1": (1, 1),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "21:9": (21, 9),
}
VIDEO_SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
MIN_SIDE, MAX_SIDE, MAX_PIXELS = 64, 2048, 2048 * 2048


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# --- identity -----------------------------------------------------------------------------


class Credentials(Strict):
    email: EmailStr = Field(max_length=320, examples=["ada@example.com"])
    password: str = Field(min_length=8, max_length=256, examples=["correct horse battery staple"])


class RefreshRequest(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"refresh_token": "q1w2e3r4t5y6u7i8o9p0"}]}
    )

    refresh_token: str = Field(min_length=1, max_length=512)


_USER_EXAMPLE = {
    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b02",
    "email": "ada@example.com",
    "role": "user",
    "created_at": "2026-11-22T09:59:00Z",
}


class UserOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_USER_EXAMPLE]})

    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]
    created_at: datetime


_TOKENS_EXAMPLE = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl",
    "refresh_token": "q1w2e3r4t5y6u7i8o9p0",
    "token_type": "bearer",
    "expires_in": 900,
}


class TokensOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TOKENS_EXAMPLE]})

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires")


class SignupOut(TokensOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{**_TOKENS_EXAMPLE, "user": _USER_EXAMPLE}]})

    user: UserOut


class Credits(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"available": 15, "reserved": 5}]})

    available: int
    reserved: int


class MeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user": _USER_EXAMPLE, "credits": {"available": 15, "reserved": 5}}]}
    )

    user: UserOut
    credits: Credits


class ApiKeyCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ci"}]})

    name: str = Field("default", min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
                    "name": "ci",
                    "prefix": "gi_Xk3v9Qa",
                    "created_at": "2026-11-22T10:00:00Z",
                    "last_used_at": None,
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    created_at: datetime
    last_used_at: datetime | None = Field(None, description="Last use, to the minute")


class ApiKeyCreated(ApiKeyOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
                    "name": "ci",
                    "prefix": "gi_Xk3v9Qa",
                    "created_at": "2026-11-22T10:00:00Z",
                    "last_used_at": None,
                    "key": "gi_Xk3v9QaZr0m7Hc2pLw8sT1uY4bN6eD5fG3hJ9kA0qWx",
                }
            ]
        }
    )

    key: str = Field(description="The secret: shown once, never again")


# --- generations --------------------------------------------------------------------------


class GenerationCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prompt": "a lighthouse on a cliff at sunset", "width": 768, "height": 512, "seed": 7},
                {
                    "kind": "video",
                    "prompt": "waves rolling onto a beach",
                    "aspect_ratio": "16:9",
                    "duration_s": 4,
                    "webhook": "https://example.com/hooks/genimage",
                    "webhook_events": ["completed"],
                },
            ]
        },
    )

    kind: Literal["image", "video"] = "image"
    prompt: str = Field(min_length=1, max_length=2000, examples=["a red fox in a snowy forest, watercolor"])
    negative_prompt: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, max_length=100, description="A model of the catalog; default `local`")
    width: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    height: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE)
    aspect_ratio: str | None = Field(None, description=f"One of {', '.join(ASPECT_RATIOS)}")
    n: int = Field(1, ge=1, le=4)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    input_image_ids: list[uuid.UUID] = Field(default_factory=list, max_length=4)
    duration_s: float | None = Field(None, ge=2, le=8, description="Video only")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    watermark: bool = False
    webhook: HttpUrl | None = Field(
        None,
        max_length=2048,
        description="Called (signed per Standard Webhooks) on the events of `webhook_events`; "
        "public http(s) hosts only",
        examples=["https://example.com/hooks/genimage"],
    )
    webhook_events: list[Literal["started", "progress", "completed"]] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Which events call the webhook (default: all three); `completed` covers "
        "succeeded, failed and canceled",
    )

    @model_validator(mode="after")
    def _shape(self) -> GenerationCreate:
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height go together")
        if self.width is not None and self.aspect_ratio is not None:
            raise ValueError("give width/height or aspect_ratio, not both")
        if self.aspect_ratio is not None and self.aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
        if self.kind == "video":
            if self.width is not None:
                raise ValueError("video size is chosen by aspect_ratio (16:9, 9:16 or 1:1)")
            if self.aspect_ratio is not None and self.aspect_ratio not in VIDEO_SIZES:
                raise ValueError("video aspect_ratio must be 16:9, 9:16 or 1:1")
            if self.n != 1:
                raise ValueError("a video request makes one clip (n=1)")
        elif self.duration_s is not None:
            raise ValueError("duration_s applies to videos only")
        if self.width is not None and self.height is not None:
            if self.width % 8 or self.height % 8:
                raise ValueError("width and height must be multiples of 8")
            if self.width * self.height > MAX_PIXELS:
                raise ValueError("too many pixels")
        return self

    def size(self) -> tuple[int, int]:
        if self.kind == "video":
            return VIDEO_SIZES[self.aspect_ratio or "16:9"]
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.aspect_ratio:
            w, h = ASPECT_RATIOS[self.aspect_ratio]
            scale = (1024 * 1024 / (w * h)) ** 0.5
            return int(w * scale) // 8 * 8, int(h * scale) // 8 * 8
        return 1024, 1024


_IMAGE_EXAMPLE = {
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
    model_config = ConfigDict(json_schema_extra={"examples": [_IMAGE_EXAMPLE]})

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


class ErrorOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"code": "provider_error", "message": "upstream failed", "retryable": True}]}
    )

    code: str
    message: str
    retryable: bool = False


class GenerationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
                    "status": "succeeded",
                    "kind": "image",
                    "prompt": "a lighthouse on a cliff at sunset",
                    "negative_prompt": None,
                    "model": "local",
                    "width": 768,
                    "height": 512,
                    "n": 1,
                    "seed": 7,
                    "output_format": "png",
                    "progress": 1.0,
                    "cost": 5,
                    "outputs": [_IMAGE_EXAMPLE],
                    "error": None,
                    "timings": {"queue_ms": 40, "run_ms": 900},
                    "queue_position": None,
                    "created_at": "2026-11-22T10:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    kind: Literal["image", "video"] | None
    prompt: str | None
    negative_prompt: str | None = None
    model: str | None
    width: int | None
    height: int | None
    n: int | None
    seed: int | None
    output_format: str | None = None
    progress: float
    cost: int | None = Field(description="Credits: reserved while running, then what was charged")
    refunded: int | None = Field(None, description="Credits given back (failed, canceled, expired)")
    provider: str | None = Field(None, description="The provider that ran (or is running) it")
    outputs: list[ImageOut]
    error: ErrorOut | None = None
    timings: dict[str, Any] | None = None
    queue_position: int | None = None
    created_at: datetime | None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class LedgerEntry(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "type": "commit",
                    "amount": -5,
                    "balance_after": 15,
                    "generation_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
                    "created_at": "2026-11-22T10:00:03Z",
                }
            ]
        }
    )

    id: str
    type: str
    amount: int
    balance_after: int
    generation_id: uuid.UUID | None = None
    created_at: datetime


# --- uploads --------------------------------------------------------------------------------


class UploadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b01",
                    "content_type": "image/png",
                    "width": 1024,
                    "height": 768,
                    "bytes": 845211,
                }
            ]
        }
    )

    id: uuid.UUID = Field(description="Use it in `input_image_ids`")
    content_type: Literal["image/png"] = Field(description="Uploads are stored re-encoded as PNG")
    width: int
    height: int
    bytes: int = Field(description="Size of the stored PNG")


# --- webhooks -------------------------------------------------------------------------------


class WebhookSecretOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]})

    key: str = Field(description="Standard Webhooks signing secret of your webhooks (`whsec_...`)")


class WebhookDeliveryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5c3a9b1e-2d4f-5a6b-8c7d-9e0f1a2b3c4d",
                    "generation_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
                    "event_type": "generation.completed",
                    "url": "https://example.com/hooks/genimage",
                    "status": "delivered",
                    "attempts": 2,
                    "last_status_code": 200,
                    "last_error": None,
                    "next_attempt_at": None,
                    "created_at": "2026-11-22T10:00:03Z",
                    "delivered_at": "2026-11-22T10:00:09Z",
                }
            ]
        }
    )

    id: uuid.UUID = Field(description="The `webhook-id` header: the same on every attempt")
    generation_id: uuid.UUID
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="When pending: the next attempt")
    created_at: datetime
    delivered_at: datetime | None = None


# --- billing and admin ------------------------------------------------------------------------


class Plan(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "starter",
                    "name": "Starter",
                    "credits": 100,
                    "price_cents": 500,
                    "currency": "usd",
                    "stripe_price_id": "price_1PStarter",
                }
            ]
        }
    )

    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    stripe_price_id: str | None = None


class PlansOut(BaseModel):
    items: list[Plan]


class StripeWebhookResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"received": True, "granted": True, "credits": 100, "balance": {"available": 120, "reserved": 0}}
            ]
        }
    )

    received: bool = True
    granted: bool = Field(description="Whether this event granted credits (false: acknowledged and ignored)")
    reason: str | None = Field(None, description="Why it was ignored")
    credits: int | None = None
    balance: Credits | None = None


class AdminCreditGrant(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"amount": 100}]})

    amount: int = Field(ge=1, le=1_000_000, description="Credits to add")


class AdminCreditsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b02",
                    "reference": "6f1c1f0e-3a57-5d52-9a55-2f8b7c0e9a11",
                    "available": 120,
                    "reserved": 0,
                }
            ]
        }
    )

    user_id: uuid.UUID
    reference: str = Field(description="The grant's key in the ledger (derived from `Idempotency-Key`)")
    available: int
    reserved: int
