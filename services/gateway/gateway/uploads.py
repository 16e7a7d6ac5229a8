"""Uploaded input images: the type is decided by decoding the content (never by the name or
the declared type); PNG, JPEG and WebP only; re-encoded as a plain PNG, so no metadata (EXIF,
GPS, XMP, ICC, text chunks) and no trailing payload survives.

Memory is what an upload really costs: a 200 kB PNG can decode to hundreds of megabytes. So
the header is read first, and from its width, height and pixel format comes the most memory
the upload will need at once while it is decoded, converted and re-encoded (``peak_bytes``).
An upload needing more than ``max_decoded_bytes`` is refused (413) before a pixel is decoded;
the others share one budget per process: each waits its turn (first come, first served) until
what it needs is free, and is refused with 503 if that takes too long. The body itself is
never held in memory (the multipart parser spools it to disk past 1 MB); the decoder reads it
from there.
"""

from __future__ import annotations

import asyncio
import collections
import io
import math
import struct
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from genimage_common.errors import ServiceUnavailable, ValidationFailed
from genimage_common.ids import new_id
from genimage_common.storage import ObjectStore, upload_key

from .errors import PayloadTooLarge, UnsupportedMediaType

FORMATS = ("PNG", "JPEG", "WEBP")
_SRGB = ImageCms.createProfile("sRGB")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# Bytes a pixel takes in Pillow's memory, by mode: multi-band 8-bit images ("RGB", "LA",
# "CMYK"...) are stored four bytes a pixel whatever their band count.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
OUT_PIXEL = 4  # RGB and RGBA, in memory
# The re-encoded PNG, at worst (incompressible pixels): the raw bytes, a filter byte per row
# and zlib's framing — a little over four bytes a pixel for RGBA.
ENCODED_PIXEL = 4.1
# Working memory of the decoders beyond the image itself, bytes per pixel:
# - progressive JPEG keeps every DCT coefficient of the image (2 bytes x 64 per 8x8 block and
#   component: 2 bytes a pixel per component) until the last scan;
# - Pillow reads a whole WebP file into memory, libwebp decodes it into a canvas of its own
#   (4 bytes a pixel) and Pillow copies that frame into a bytes object (4 more) before the
#   image gets it, and the lossless decoder keeps buffers of its own (about 4 more, measured);
#   all of it is let go once the image is loaded.
PROGRESSIVE_JPEG_PER_BAND = 2
WEBP_EXTRA = 12
# What the interpreter, the allocator and the libraries' own buffers add, measured (up to 10 %
# of the image on a 9-megapixel JPEG rotated by its EXIF orientation) plus a margin.
SLACK_FACTOR = 1.15
SLACK_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    id: uuid.UUID
    content_type: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class Header:
    """What the image says about itself before any pixel is decoded."""

    format: str
    width: int
    height: int
    mode: str
    bands: int
    progressive: bool = False
    file_bytes: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """The decoded image alone: width x height x bytes per pixel (as Pillow holds it)."""
        return self.pixels * _PIXEL_BYTES.get(self.mode, 4)

    @property
    def peak_bytes(self) -> int:
        """The most memory the upload needs at once, over every step of ``reencode``: the
        decoded image plus the decoder's own buffers, then the image and its EXIF-rotated
        copy, then the image and its RGB(A) copy, then that copy and its PNG encoding."""
        src = _PIXEL_BYTES.get(self.mode, 4)
        extra = 0.0
        if self.format == "JPEG" and self.progressive:
            extra = PROGRESSIVE_JPEG_PER_BAND * self.bands
        elif self.format == "WEBP":
            extra = WEBP_EXTRA + self.file_bytes / max(self.pixels, 1)
        per_pixel = max(src + extra, 2 * src, src + extra + OUT_PIXEL, OUT_PIXEL + ENCODED_PIXEL)
        return math.ceil(self.pixels * per_pixel * SLACK_FACTOR) + SLACK_BYTES


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """The canvas size in a WebP header (lossy, lossless or extended), without decoding:
    libwebp allocates the canvas as soon as Pillow opens the file, so it is checked first."""
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def read_header(file: BinaryIO) -> Header:
    """The format, size and pixel format of the image in ``file``. CPU-light (blocking I/O)."""
    file_bytes = file.seek(0, io.SEEK_END)
    file.seek(0)
    head = file.read(32)
    file.seek(0)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
        if size is None:
            raise ValidationFailed("the image could not be decoded")
        # Its pixel format is only known once opened, which already costs the canvas: assume
        # the widest (RGBA).
        return Header("WEBP", size[0], size[1], "RGBA", 4, file_bytes=file_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(file, formats=("PNG", "JPEG"))
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaType("only PNG, JPEG and WebP images are accepted") from exc
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge("the image is too large") from exc
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise ValidationFailed("the image could not be decoded") from exc
    with img:
        progressive = bool(img.info.get("progressive") or img.info.get("progression"))
        return Header(img.format or "", img.width, img.height, img.mode, len(img.getbands()), progressive)


def reencode(file: BinaryIO, header: Header) -> tuple[bytes, int, int]:
    """The image in ``file`` as metadata-free PNG bytes, with its size. CPU-bound.

    Every intermediate image is closed as soon as the next exists, so that at most two are
    alive at once (what ``Header.peak_bytes`` counts)."""
    file.seek(0)
    with warnings.catch_warnings():
        # Our limits are checked before this; Pillow's own bomb check stays as a backstop.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(file, formats=FORMATS)
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaType("only PNG, JPEG and WebP images are accepted") from exc
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge("the image is too large") from exc
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise ValidationFailed("the image could not be decoded") from exc
    current = img
    try:
        if (img.format, img.width, img.height) != (header.format, header.width, header.height):
            raise ValidationFailed("the image could not be decoded")  # not what the header said
        try:
            img.seek(0)  # animations: the first frame only
            img.load()
            if getattr(img, "_decoder", None) is not None:
                # WebP: libwebp's canvas and the file's bytes are of no use once the frame is
                # loaded, but Pillow keeps them as long as the image.
                img._decoder = None
            icc = img.info.get("icc_profile")
            # In place: the rotated copy replaces the pixels (no copy at all when upright).
            ImageOps.exif_transpose(img, in_place=True)
        except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as exc:
            raise ValidationFailed("the image could not be decoded") from exc
        alpha = img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)
        mode = "RGBA" if alpha else "RGB"
        if icc and img.mode in ("RGB", "RGBA", "CMYK"):
            try:
                profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                if img.mode == mode:
                    ImageCms.profileToProfile(img, profile, _SRGB, inPlace=True)
                else:
                    current = ImageCms.profileToProfile(img, profile, _SRGB, outputMode=mode) or img
            except (ImageCms.PyCMSError, OSError, ValueError):
                pass
        if current.mode != mode:
            current = current.convert(mode)
        if current is not img:
            img.close()  # frees the decoded pixels (and a WebP decoder's buffers) before encoding
        # Nothing of the original's metadata travels: only the pixels are written.
        current.info = {}
        out = io.BytesIO()
        # Fast zlib level: uploads are inputs for the worker, not archives (4x faster than 6).
        current.save(out, format="PNG", optimize=False, compress_level=1)
        width, height = current.size
    finally:
        current.close()
        img.close()
    return out.getvalue(), width, height


class MemoryBudget:
    """Bytes that uploads being decoded may hold at once in this process. Granted first come,
    first served: a large request is not starved by a stream of small ones."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @asynccontextmanager
    async def hold(self, amount: int, *, timeout: float) -> AsyncIterator[None]:
        await self.acquire(amount, timeout=timeout)
        try:
            yield
        finally:
            self.release(amount)

    async def acquire(self, amount: int, *, timeout: float) -> None:
        if amount > self.total:
            raise PayloadTooLarge("the image needs more memory than uploads may use at once")
        if not self._waiters and self.used + amount <= self.total:
            self.used += amount
            return
        entry = (amount, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await entry[1]
        except BaseException as exc:
            if entry[1].done() and not entry[1].cancelled():
                self.release(amount)  # granted just as the wait ended
            else:
                entry[1].cancel()
                with suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()  # it may have been the head that held the others back
            if isinstance(exc, TimeoutError):
                raise ServiceUnavailable(
                    "too many large uploads at once; retry shortly", retry_after=max(1, math.ceil(timeout))
                ) from exc
            raise

    def release(self, amount: int) -> None:
        self.used -= amount
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            amount, future = self._waiters.popleft()
            if future.done():
                continue
            self.used += amount
            future.set_result(None)


class UploadService:
    def __init__(
        self,
        store: ObjectStore,
        *,
        max_bytes: int,
        max_pixels: int,
        max_decoded_bytes: int,
        memory_budget_bytes: int,
        memory_wait_s: float,
        concurrency: int,
    ) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._max_decoded = max_decoded_bytes
        self._wait_s = memory_wait_s
        self.budget = MemoryBudget(memory_budget_bytes)
        self._slots = asyncio.Semaphore(concurrency)

    async def create(self, *, user_id: uuid.UUID, file: BinaryIO, size: int) -> Upload:
        if size > self.max_bytes:
            raise PayloadTooLarge(f"uploads are limited to {self.max_bytes} bytes")
        if size == 0:
            raise ValidationFailed("the file is empty", errors=[{"loc": ["body", "file"], "msg": "empty file"}])
        header = await asyncio.to_thread(read_header, file)
        if header.width < 1 or header.height < 1 or header.pixels > self._max_pixels:
            raise PayloadTooLarge(f"the image has more than {self._max_pixels} pixels")
        need = header.peak_bytes
        if need > self._max_decoded:
            raise PayloadTooLarge(
                f"the image is too large decoded: {header.width}x{header.height} {header.mode} needs "
                f"{need} bytes to process, uploads may use {self._max_decoded}",
                decoded_bytes=need,
                max_decoded_bytes=self._max_decoded,
            )
        await self.budget.acquire(need, timeout=self._wait_s)
        # Given back when the work ends, not when this request does: a client that hangs up
        # does not stop the decoding thread, whose memory is in use until it returns. The PNG
        # it makes is held until stored, within the same share.
        work = asyncio.ensure_future(self._process(user_id, file, header))
        work.add_done_callback(lambda _: self.budget.release(need))
        return await asyncio.shield(work)

    async def _process(self, user_id: uuid.UUID, file: BinaryIO, header: Header) -> Upload:
        async with self._slots:  # decoding is CPU-bound: a few at a time, off the event loop
            png, width, height = await asyncio.to_thread(reencode, file, header)
        upload_id = new_id()
        await self._store.put(upload_key(user_id, upload_id, "png"), png, "image/png")
        return Upload(upload_id, "image/png", width, height, len(png))

    async def owned(self, *, user_id: uuid.UUID, upload_id: uuid.UUID) -> bool:
        """Whether ``upload_id`` is an upload of this user: its key lives under the user's prefix."""
        return await self._store.stat(upload_key(user_id, upload_id, "png")) is not None
