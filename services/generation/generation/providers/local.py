"""The offline ``local`` provider: real, varied images rendered from the prompt.

Same prompt + seed → byte-identical output; different prompts look clearly different
(the palette and composition come from the prompt's words). Generation parameters are
embedded in the PNG text chunk, as image tools expect.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import json
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from PIL.PngImagePlugin import PngInfo

from .base import Progress, RenderedOutput, RenderRequest

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# Words that steer the palette, so "red sunset" and "blue ocean" differ at a glance.
HUES = {
    "red": 0.0,
    "fire": 0.03,
    "sunset": 0.06,
    "orange": 0.08,
    "autumn": 0.09,
    "gold": 0.12,
    "yellow": 0.15,
    "sun": 0.14,
    "lime": 0.22,
    "green": 0.33,
    "forest": 0.3,
    "jungle": 0.32,
    "teal": 0.47,
    "cyan": 0.5,
    "ocean": 0.55,
    "sea": 0.56,
    "sky": 0.58,
    "blue": 0.62,
    "night": 0.66,
    "indigo": 0.7,
    "purple": 0.78,
    "violet": 0.8,
    "magenta": 0.85,
    "pink": 0.92,
    "rose": 0.95,
}


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _palette(prompt: str, rng: random.Random) -> list[tuple[int, int, int]]:
    words = [w.strip(".,!?;:").lower() for w in prompt.split()]
    hues = [HUES[w] for w in words if w in HUES]
    if not hues:
        hues = [int(hashlib.sha256(prompt.lower().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF]
    colors = []
    for i in range(6):
        h = (hues[i % len(hues)] + rng.uniform(-0.05, 0.05)) % 1.0
        s = rng.uniform(0.45, 0.95)
        v = rng.uniform(0.35, 1.0)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _background(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), gradient)


def render_image(request: RenderRequest, index: int) -> Image.Image:
    w, h = request.width, request.height
    rng = _rng(request.prompt, request.negative_prompt or "", request.seed, index, w, h)
    palette = _palette(request.prompt, rng)
    img = _background(w, h, palette[0], palette[1]).convert("RGBA")
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = min(w, h)
    for _ in range(12 + len(request.prompt) % 20):
        color = (*rng.choice(palette[2:]), rng.randint(60, 190))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.04, 0.35) * scale
        shape = rng.random()
        if shape < 0.45:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
        elif shape < 0.8:
            points = [(cx + rng.uniform(-r, r), cy + rng.uniform(-r, r)) for _ in range(rng.randint(3, 6))]
            draw.polygon(points, fill=color)
        else:
            draw.line([(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(3)], fill=color, width=max(2, int(r / 6)))
    img = Image.alpha_composite(img, layer.filter(ImageFilter.GaussianBlur(radius=max(1, scale // 200))))
    for source in request.input_images:
        # Image inputs are blended into the composition.
        with Image.open(io.BytesIO(source)) as src:
            fitted = src.convert("RGBA").resize((w, h))
        img = Image.blend(img, fitted, 0.5)
    if request.watermark:
        _watermark(img)
    return img.convert("RGB")


def _watermark(img: Image.Image) -> None:
    draw = ImageDraw.Draw(img)
    size = max(10, min(img.size) // 24)
    font = ImageFont.load_default(size=size)
    text = "genimage"
    box = draw.textbbox((0, 0), text, font=font)
    x = img.width - (box[2] - box[0]) - size
    y = img.height - (box[3] - box[1]) - size
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 200))


def encode(img: Image.Image, fmt: str, parameters: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", _a1111_parameters(parameters))
        info.add_text("genimage", json.dumps(parameters, sort_keys=True))
        img.save(buf, format="PNG", pnginfo=info, optimize=False)
    elif fmt == "jpeg":
        img.save(buf, format="JPEG", quality=92)
    else:
        img.save(buf, format="WEBP", quality=90, method=4)
    return buf.getvalue()


def _a1111_parameters(p: dict[str, object]) -> str:
    """The ``parameters`` text chunk in the form image tools (A1111, InvokeAI) read."""
    lines = [str(p["prompt"])]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    lines.append(f"Seed: {p['seed']}, Size: {p['width']}x{p['height']}, Model: {p['model']}")
    return "\n".join(lines)


class LocalProvider:
    name = "local"

    async def generate(self, request: RenderRequest, *, progress: Progress) -> list[RenderedOutput]:
        outputs: list[RenderedOutput] = []
        for index in range(request.n):
            data = await asyncio.to_thread(self._render_one, request, index)
            outputs.append(RenderedOutput(data, CONTENT_TYPES[request.output_format], request.width, request.height))
            await progress((index + 1) / request.n, "rendering")
        return outputs

    @staticmethod
    def _render_one(request: RenderRequest, index: int) -> bytes:
        parameters = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "index": index,
            "model": request.model,
            "width": request.width,
            "height": request.height,
        }
        return encode(render_image(request, index), request.output_format, parameters)
