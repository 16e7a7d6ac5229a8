"""Commands on the user's own images; each change and its ``gallery.*`` event commit together."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.events import ImageFavorited, ImageUnfavorited, make_event
from genimage_common.outbox import enqueue
from genimage_common.streams import GALLERY

from . import queries
from .models import images, outbox

SOURCE = "genimage/gallery"


async def set_favorite(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, favorite: bool
) -> dict[str, Any]:
    """Idempotent: an image already in the wanted state changes nothing and emits nothing."""
    row = await queries.get_image(session, user_id=user_id, image_id=image_id)
    if row.favorite != favorite:
        await session.execute(update(images).where(images.c.id == image_id).values(favorite=favorite))
        data_cls = ImageFavorited if favorite else ImageUnfavorited
        event = make_event(data_cls(user_id=user_id, image_id=image_id), source=SOURCE, subject=image_id)
        await enqueue(session, outbox, event, stream=GALLERY)
    row = await queries.get_image(session, user_id=user_id, image_id=image_id)
    return queries.image_dict(row)
