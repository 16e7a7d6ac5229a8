"""Uploaded input images: the type is decided by decoding the content (never by the name or
the declared type); PNG, JPEG and WebP only; size and pixel limits checked before the pixels
are decoded (decompression bombs); re-encoded as a plain PNG, so no metadata (EXIF, GPS,
XMP, ICC, text chunks) and no trailing payload survives."""

from __future__ import annotations

import asyncio
import io
import uuid
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from genimage_common.errors import ValidationFailed
from genimage_common.ids import new_id
from genimage_common.storage import ObjectStore, upload_key

from .errors import PayloadTooLarge, UnsupportedMediaType

FORMATS = ("PNG", "JPEG", "WEBP")
_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class Upload:
    id: uuid.UUID
    content_type: str
    width: int
    height: int
    bytes: int


def reencode(data: bytes, *, max_pixels: int) -> tuple[bytes, int, int]:
    """The image in ``data`` as metadata-free PNG bytes, with its size. CPU-bound."""
    with warnings.catch_warnings():
        # Pillow's own bomb warning turns into an error; our limit is checked first anyway.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaType("only PNG, JPEG and WebP images are accepted") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLarge(f"the image has more than {max_pixels} pixels") from exc
        with img:
            width, height = img.size
            # The header tells the size before a single pixel is decoded.
            if width < 1 or height < 1 or width * height > max_pixels:
                raise PayloadTooLarge(f"the image has more than {max_pixels} pixels")
            try:
                img.seek(0)  # animations: the first frame only
                img.load()
                icc = img.info.get("icc_profile")
                oriented = ImageOps.exif_transpose(img)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ValidationFailed("the image could not be decoded") from exc
            alpha = oriented.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                oriented.mode == "P" and "transparency" in oriented.info
            )
            mode = "RGBA" if alpha else "RGB"
            if icc and oriented.mode in ("RGB", "RGBA", "CMYK"):
                try:
                    converted = ImageCms.profileToProfile(
                        oriented, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _SRGB, outputMode=mode
                    )
                except (ImageCms.PyCMSError, OSError, ValueError):
                    converted = oriented.convert(mode)
            else:
                converted = oriented.convert(mode)
            # A new image from the pixels alone: nothing of the original's info travels.
            clean = Image.frombytes(mode, converted.size, converted.tobytes())
            out = io.BytesIO()
            # Fast zlib level: uploads are inputs for the worker, not archives (4x faster than 6).
            clean.save(out, format="PNG", optimize=False, compress_level=1)
            return out.getvalue(), clean.width, clean.height


class UploadService:
    def __init__(self, store: ObjectStore, *, max_bytes: int, max_pixels: int, concurrency: int) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._slots = asyncio.Semaphore(concurrency)

    async def create(self, *, user_id: uuid.UUID, data: bytes) -> Upload:
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"uploads are limited to {self.max_bytes} bytes")
        if not data:
            raise ValidationFailed("the file is empty", errors=[{"loc": ["body", "file"], "msg": "empty file"}])
        async with self._slots:  # decoding is CPU-bound: a few at a time, off the event loop
            png, width, height = await asyncio.to_thread(reencode, data, max_pixels=self._max_pixels)
        upload_id = new_id()
        await self._store.put(upload_key(user_id, upload_id, "png"), png, "image/png")
        return Upload(upload_id, "image/png", width, height, len(png))

    async def owned(self, *, user_id: uuid.UUID, upload_id: uuid.UUID) -> bool:
        """Whether ``upload_id`` is an upload of this user: its key lives under the user's prefix."""
        return await self._store.stat(upload_key(user_id, upload_id, "png")) is not None
