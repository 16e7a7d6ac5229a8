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
    refresh_token: str = Field(min_length=1, max_length=512)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]
    created_at: datetime


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires")


class SignupOut(TokensOut):
    user: UserOut


class Credits(BaseModel):
    available: int
    reserved: int


class MeOut(BaseModel):
    user: UserOut
    credits: Credits


class ApiKeyCreate(Strict):
    name: str = Field("default", min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret: shown once, never again")


# --- generations --------------------------------------------------------------------------


class GenerationCreate(Strict):
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
    webhook: HttpUrl | None = None
    webhook_events: list[Literal["started", "progress", "completed"]] | None = None

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


class ImageOut(BaseModel):
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
    code: str
    message: str
    retryable: bool = False


class GenerationOut(BaseModel):
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
    cost: int | None
    outputs: list[ImageOut]
    error: ErrorOut | None = None
    timings: dict[str, Any] | None = None
    queue_position: int | None = None
    created_at: datetime | None


class LedgerEntry(BaseModel):
    id: str
    type: str
    amount: int
    balance_after: int
    generation_id: uuid.UUID | None = None
    created_at: datetime
