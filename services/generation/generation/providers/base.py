"""The provider interface: a request in, rendered outputs (bytes) out, progress reported as it goes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

Progress = Callable[[float, str], Awaitable[None]]


@dataclass(frozen=True)
class RenderRequest:
    kind: str
    prompt: str
    negative_prompt: str | None
    model: str
    width: int
    height: int
    n: int
    seed: int
    output_format: str = "png"
    watermark: bool = False
    duration_s: float | None = None
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


class ProviderError(Exception):
    """A failure with a stable code for ``generation.failed``."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    name: str

    async def generate(self, request: RenderRequest, *, progress: Progress) -> list[RenderedOutput]: ...
