"""Input images."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from .common import examples


class UploadOut(BaseModel):
    model_config = examples(
        {
            "id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b01",
            "content_type": "image/png",
            "width": 1024,
            "height": 768,
            "bytes": 845211,
        }
    )

    id: uuid.UUID = Field(description="Use it in `input_image_ids`")
    content_type: Literal["image/png"] = Field(description="Uploads are stored re-encoded as PNG")
    width: int
    height: int
    bytes: int = Field(description="Size of the stored PNG")
