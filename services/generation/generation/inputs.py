"""Input images of a request: the user's uploads, re-encoded as PNG by the gateway."""

from __future__ import annotations

import uuid

from minio.error import S3Error

from genimage_common.storage import ObjectStore, upload_key

from .errors import JobInvalid

MAX_INPUT_BYTES = 50 * 1024 * 1024


async def load_inputs(store: ObjectStore, *, user_id: uuid.UUID, upload_ids: list[uuid.UUID]) -> list[bytes]:
    """The uploads' bytes in request order; a missing upload (never uploaded, deleted, or another
    user's: keys are per user) is an invalid job, not something a retry fixes."""
    images = []
    for upload_id in upload_ids:
        key = upload_key(user_id, upload_id, "png")
        size = await store.stat(key)
        if size is None:
            raise JobInvalid(f"input image {upload_id} does not exist")
        if size > MAX_INPUT_BYTES:
            raise JobInvalid(f"input image {upload_id} is too large")
        try:
            images.append(await store.get(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                raise JobInvalid(f"input image {upload_id} does not exist") from exc
            raise
    return images
