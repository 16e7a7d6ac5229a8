"""The offline ``local`` provider: real, varied images (and videos) rendered from the prompt.

Same prompt + seed → byte-identical output; different prompts look clearly different (see
``scene.py``). Image inputs are blended into the picture (the first one carries the
composition, the others are laid in as framed insets). Generation parameters are embedded in
the PNG text chunks, as image tools expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import Callable
from typing import TypeVar

from PIL import Image, ImageDraw, ImageFilter

from .. import imaging
from ..cancellation import CancelToken
from ..errors import InvalidInput
from . import scene, video
from .base import Progress, RenderedOutput, RenderRequest

T = TypeVar("T")
PROGRESS_POLL_S = 0.2


def rng_for(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def compose(img: Image.Image, inputs: list[Image.Image]) -> Image.Image:
    """Blend the first input over the scene (its composition dominates, the scene's light and
    palette show through); lay the others in as framed insets along the bottom edge."""
    if not inputs:
        return img
    w, h = img.size
    base = imaging.cover(inputs[0].convert("RGB"), w, h)
    out = Image.blend(img, base, 0.6)
    extra = inputs[1:]
    if extra:
        side = int(min(w, h) * 0.22)
        margin = max(4, side // 12)
        draw = ImageDraw.Draw(out)
        for i, inset in enumerate(extra):
            x = margin + i * (side + margin * 2)
            y = h - side - margin * 2
            shadow = Image.new("L", (side + margin * 2, side + margin * 2), 0)
            ImageDraw.Draw(shadow).rectangle((margin, margin, side + margin, side + margin), fill=120)
            shadow = shadow.filter(ImageFilter.GaussianBlur(margin / 2))
            out.paste((0, 0, 0), (x + margin // 2, y + margin // 2), shadow)
            draw.rectangle(
                (x - margin // 2, y - margin // 2, x + side + margin // 2, y + side + margin // 2), fill=(250, 250, 245)
            )
            out.paste(imaging.cover(inset.convert("RGB"), side, side), (x, y))
    return out


class LocalProvider:
    name = "local"

    def __init__(self, model: str = "local", *, max_input_pixels: int = 40_000_000) -> None:
        self.model = model
        self.max_input_pixels = max_input_pixels

    async def aclose(self) -> None:
        return None

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]:
        inputs = [self._decode(data) for data in request.input_images]
        if request.kind == "video":
            return [await self._video(request, inputs, progress=progress, cancel=cancel)]
        outputs: list[RenderedOutput] = []
        await progress(0.0, "rendering")
        for index in range(request.n):
            data = await cancel.run(asyncio.to_thread(self.render_image, request, index, inputs, cancel))
            outputs.append(
                RenderedOutput(data, imaging.CONTENT_TYPES[request.output_format], request.width, request.height)
            )
            await progress((index + 1) / request.n, "rendering")
        return outputs

    def _decode(self, data: bytes) -> Image.Image:
        try:
            return imaging.decode(data, max_pixels=self.max_input_pixels)
        except imaging.UndecodableImage as exc:
            raise InvalidInput(f"input image: {exc}") from exc

    def parameters(self, request: RenderRequest, index: int) -> dict[str, object]:
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "index": index,
            "model": self.model,
            "width": request.width,
            "height": request.height,
        }

    def render_image(self, request: RenderRequest, index: int, inputs: list[Image.Image], cancel: CancelToken) -> bytes:
        img = self.picture(request, index, request.width, request.height, cancel)
        img = compose(img, inputs)
        if request.watermark:
            img = imaging.watermark(img)
        cancel.raise_if_canceled()
        return imaging.encode(img, request.output_format, self.parameters(request, index))

    @staticmethod
    def picture(request: RenderRequest, index: int, width: int, height: int, cancel: CancelToken) -> Image.Image:
        rng = rng_for(request.prompt, request.negative_prompt or "", request.seed, index, width, height)
        return scene.paint(request.prompt, request.negative_prompt, rng, width, height, cancel.raise_if_canceled)

    async def _video(
        self, request: RenderRequest, inputs: list[Image.Image], *, progress: Progress, cancel: CancelToken
    ) -> RenderedOutput:
        await progress(0.0, "rendering")

        def render(report: video.Report) -> video.Clip:
            cw, ch = video.canvas_size(request.width, request.height)
            if inputs:
                still = imaging.cover(inputs[0].convert("RGB"), cw, ch)
            else:
                still = self.picture(request, 0, cw, ch, cancel)
            return video.render_clip(
                still,
                width=request.width,
                height=request.height,
                duration_s=request.duration_s or 4.0,
                watermark=request.watermark,
                direction=rng_for("pan", request.seed).random(),
                check=cancel.raise_if_canceled,
                report=report,
            )

        clip = await threaded(render, cancel=cancel, progress=progress, stage="encoding")
        return RenderedOutput(
            clip.data, "video/mp4", request.width, request.height, duration_s=clip.duration_s, poster=clip.poster
        )


async def threaded(
    fn: Callable[[Callable[[float], None]], T], *, cancel: CancelToken, progress: Progress, stage: str
) -> T:
    """Run ``fn`` in a thread; the fraction it reports is published from the loop, so progress
    events never outlive the work (a late one could follow the terminal event)."""
    box = {"fraction": 0.0}
    work = asyncio.ensure_future(asyncio.to_thread(fn, lambda f: box.__setitem__("fraction", f)))

    async def relay() -> None:
        while not work.done():
            await asyncio.wait({work}, timeout=PROGRESS_POLL_S)
            if not work.done():
                await progress(box["fraction"], stage)

    relay_task = asyncio.ensure_future(relay())
    try:
        return await cancel.run(work)
    finally:
        relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await relay_task
