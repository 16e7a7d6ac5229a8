"""What a job leaves in object storage: originals, WebP thumbnails, and a manifest.

The manifest is the ``completed`` event itself, written after the outputs (ADR 3); the state
bucket's terminal record is the authority (``state.py``), the manifest lets a job whose
record was lost still find its finished outputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid

from genimage_common.events import Output
from genimage_common.ids import image_id_for
from genimage_common.storage import EXTENSIONS, ObjectStore, output_key, thumbnail_key

from . import imaging
from .providers.base import RenderedOutput

log = logging.getLogger(__name__)


def manifest_key(user_id: uuid.UUID, generation_id: uuid.UUID) -> str:
    return f"users/{user_id}/generations/{generation_id}/manifest.json"


def user_prefix(user_id: uuid.UUID) -> str:
    return f"users/{user_id}/"


async def store_output(
    store: ObjectStore, *, user_id: uuid.UUID, generation_id: uuid.UUID, index: int, rendered: RenderedOutput
) -> Output:
    """Idempotent: the same key on every attempt."""
    key = output_key(user_id, generation_id, index, EXTENSIONS[rendered.content_type])
    thumb_key = thumbnail_key(user_id, generation_id, index)
    thumb = await asyncio.to_thread(imaging.thumbnail, rendered.poster or rendered.data)
    await asyncio.gather(
        store.put(key, rendered.data, rendered.content_type), store.put(thumb_key, thumb, "image/webp")
    )
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


async def discard(store: ObjectStore, *, user_id: uuid.UUID, generation_id: uuid.UUID, outputs: list[Output]) -> None:
    """Outputs of a run whose generation ended otherwise (canceled meanwhile): nobody pays for
    them, nobody will see them."""
    keys = [k for o in outputs for k in (o.object_key, o.thumbnail_key)]
    await store.delete([*keys, manifest_key(user_id, generation_id)])
    log.info("discarded outputs of a generation settled otherwise", extra={"objects": len(keys)})


def owned_keys(user_id: uuid.UUID, keys: list[str]) -> tuple[list[str], list[str]]:
    """Split keys into those under the user's prefix and the others (never deleted)."""
    prefix = user_prefix(user_id)
    mine = [k for k in keys if k.startswith(prefix) and ".." not in k]
    return mine, [k for k in keys if k not in mine]
