"""A generation: what a client asks for, what it gets back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl, model_validator

from genimage_common.contracts.status import GenerationStatus

from .common import Strict, examples
from .images import IMAGE_EXAMPLE, ImageOut

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


class GenerationCreate(Strict):
    model_config = examples(
        {"prompt": "a lighthouse on a cliff at sunset", "width": 768, "height": 512, "seed": 7},
        {
            "kind": "video",
            "prompt": "waves rolling onto a beach",
            "aspect_ratio": "16:9",
            "duration_s": 4,
            "webhook": "https://example.com/hooks/genimage",
            "webhook_events": ["completed"],
        },
        extra="forbid",
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


class ErrorOut(BaseModel):
    model_config = examples({"code": "provider_error", "message": "upstream failed", "retryable": True})

    code: str
    message: str
    retryable: bool = False


class GenerationOut(BaseModel):
    model_config = examples(
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
            "outputs": [IMAGE_EXAMPLE],
            "error": None,
            "timings": {"queue_ms": 40, "run_ms": 900},
            "queue_position": None,
            "created_at": "2026-11-22T10:00:00Z",
        }
    )

    id: uuid.UUID
    status: GenerationStatus
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
