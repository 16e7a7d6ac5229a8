"""What a job leaves in object storage: originals, WebP thumbnails, and a manifest.

The manifest is the ``completed`` event itself, written last: a redelivered job that finds
it re-publishes that same event instead of rendering again.
"""

from __future__ import annotations

import hashlib
import io
import uuid

from PIL import Image

from genimage_common.events import Output
from genimage_common.ids import image_id_for
from genimage_common.storage import EXTENSIONS, ObjectStore, output_key, thumbnail_key

from .providers.base import RenderedOutput

THUMBNAIL_MAX = 256


def manifest_key(user_id: uuid.UUID, generation_id: uuid.UUID) -> str:
    return f"users/{user_id}/generations/{generation_id}/manifest.json"


def make_thumbnail(still: bytes) -> bytes:
    with Image.open(io.BytesIO(still)) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX))
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=80)
        return buf.getvalue()


async def store_output(
    store: ObjectStore, *, user_id: uuid.UUID, generation_id: uuid.UUID, index: int, rendered: RenderedOutput
) -> Output:
    key = output_key(user_id, generation_id, index, EXTENSIONS[rendered.content_type])
    thumb_key = thumbnail_key(user_id, generation_id, index)
    await store.put(key, rendered.data, rendered.content_type)
    await store.put(thumb_key, make_thumbnail(rendered.poster or rendered.data), "image/webp")
    return Output(
        image_id=image_id_for(generation_id, index),
        index=index,
        object_key=key,
        thumbnail_key=thumb_key,
        content_type=rendered.content_type,
        width=rendered.width,
        height=rendered.height,
        bytes=len(rendered.data),
        sha256=hashlib.sha256(rendered.data).hexdigest(),
        duration_s=rendered.duration_s,
    )
