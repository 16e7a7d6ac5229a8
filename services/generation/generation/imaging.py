"""Image plumbing every provider shares: decode with limits, fit to the requested size,
watermark, and encode with the generation parameters embedded (PNG text chunks, JPEG comment),
so outputs look the same whichever backend drew them."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
THUMBNAIL_MAX = 256


class UndecodableImage(ValueError):
    pass


def decode(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open and fully load an image; anything that is not one (or is a decompression bomb) raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise UndecodableImage(f"image of {img.width}x{img.height} exceeds {max_pixels} pixels")
            img.load()
    except UndecodableImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"not a decodable image: {exc}") from exc
    return img


def cover(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale and center-crop to exactly ``width`` x ``height`` (no letterboxing)."""
    if img.size == (width, height):
        return img
    return ImageOps.fit(img, (width, height), method=Image.Resampling.LANCZOS)


def watermark(img: Image.Image, text: str = "genimage") -> Image.Image:
    """A discreet mark in the bottom-right corner, legible on light and dark pictures."""
    img = img.convert("RGB")
    size = max(10, min(img.size) // 24)
    font = ImageFont.load_default(size=size)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    box = draw.textbbox((0, 0), text, font=font)
    x = img.width - (box[2] - box[0]) - size
    y = img.height - (box[3] - box[1]) - size
    draw.text((x + 1, y + 1), text, font=font, fill=(0, 0, 0, 110))
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 190))
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def a1111_parameters(p: dict[str, Any]) -> str:
    """The ``parameters`` text chunk in the form image tools (A1111, InvokeAI, civitai) read."""
    lines = [str(p["prompt"])]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    lines.append(f"Seed: {p['seed']}, Size: {p['width']}x{p['height']}, Model: {p['model']}")
    return "\n".join(lines)


def encode(img: Image.Image, fmt: str, parameters: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    img = img.convert("RGB")
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(parameters))
        info.add_text("genimage", json.dumps(parameters, sort_keys=True))
        img.save(buf, format="PNG", pnginfo=info, compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, format="JPEG", quality=92, comment=a1111_parameters(parameters).encode())
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=90, method=4)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def thumbnail(still: bytes) -> bytes:
    """WebP, longest side at most 256 px."""
    with Image.open(io.BytesIO(still)) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=80)
        return buf.getvalue()
