from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from ..deps import CurrentUser, ServicesDep
from ..schemas import UploadOut
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
    its name; it is decoded, checked against the size and pixel limits, and stored
    re-encoded as PNG without any metadata. Only its owner can use it."""
    data = await file.read(services.uploads.max_bytes + 1)
    upload = await services.uploads.create(user_id=user.id, data=data)
    return UploadOut(
        id=upload.id, content_type="image/png", width=upload.width, height=upload.height, bytes=upload.bytes
    )
