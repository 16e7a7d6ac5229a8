"""The provider interface: a request in, rendered outputs (bytes) out, progress reported as it goes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..cancellation import CancelToken

Progress = Callable[[float, str], Awaitable[None]]


async def no_progress(value: float, stage: str) -> None:
    return None


@dataclass(frozen=True)
class RenderRequest:
    kind: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    n: int
    seed: int
    output_format: str = "png"
    watermark: bool = False
    duration_s: float | None = None
    aspect_ratio: str | None = None
    # Decoded by the job from the user's uploads (PNG bytes), in request order.
    input_images: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedOutput:
    data: bytes
    content_type: str
    width: int
    height: int
    duration_s: float | None = None
    # The still used for the thumbnail when ``data`` is not an image (video poster frame).
    poster: bytes | None = None


class Provider(Protocol):
    # The provider kind ("local", "openai" ...) and the catalog model this instance serves.
    name: str
    model: str

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]: ...

    async def aclose(self) -> None: ...
