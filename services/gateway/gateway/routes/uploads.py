from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from ..deps import CurrentUser, ServicesDep
from ..schemas.uploads import UploadOut
from .responses import errors

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadOut,
    responses=errors(401, 413, 415, 422, 429, 503),
)
async def create_upload(
    file: Annotated[UploadFile, File(description="A PNG, JPEG or WebP image (10 MB at most by default)")],
    user: CurrentUser,
    services: ServicesDep,
) -> UploadOut:
    """Upload an input image for `input_image_ids`. Its type is decided by its content, not
    its name; its header is checked against the size, pixel and decoded-memory limits before
    it is decoded, and it is stored re-encoded as PNG without any metadata. Only its owner
    can use it. `503` (with `Retry-After`) when too many large uploads are being processed."""
    size = file.size
    if size is None:  # not measured by the multipart parser: measure it
        size = file.file.seek(0, io.SEEK_END)
    # The spooled file itself, not its bytes: the decoder reads it from disk.
    upload = await services.uploads.create(user_id=user.id, file=file.file, size=size)
    return UploadOut(
        id=upload.id, content_type="image/png", width=upload.width, height=upload.height, bytes=upload.bytes
    )
