"""Commands on the user's own images. Each decides on the current row (locked), then emits its
``gallery.*`` event through ``emit``: the event is applied to the read model by the same
projection a replay uses, recorded as processed, and written to the outbox — all in the
caller's transaction. Commands are idempotent: a request that changes nothing emits nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.database import claim_event
from genimage_common.errors import Conflict
from genimage_common.events import (
    Event,
    EventData,
    ImageFavorited,
    ImagePublished,
    ImageRestored,
    ImageTrashed,
    ImageUnfavorited,
    ImageUnpublished,
    make_event,
)
from genimage_common.outbox import enqueue
from genimage_common.streams import GALLERY

from . import projection, queries
from .models import outbox, processed_events

SOURCE = "genimage/gallery"
ONE_TICK = timedelta(milliseconds=1)  # events carry millisecond times


async def emit(
    session: AsyncSession,
    data: EventData,
    *,
    subject: uuid.UUID,
    after: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> Event[Any]:
    """Apply ``data`` as an event to the read model and queue it for the GALLERY stream.

    ``after`` is the clock of the register the event changes: the event's time is moved past
    it, so a command always wins over the state it was decided on, even within a millisecond.
    """
    event = make_event(data, source=SOURCE, subject=subject, event_id=event_id)
    if after is not None and event.time <= after:
        event = event.model_copy(update={"time": after + ONE_TICK})
    await claim_event(session, processed_events, event_id=event.id, consumer=projection.INBOX[GALLERY])
    await projection.apply(session, event)
    await enqueue(session, outbox, event, stream=GALLERY)
    return event


def _not_in_trash(row: Any) -> None:
    if row.deleted_at is not None:
        raise Conflict("the image is in the trash; restore it first")


async def set_favorite(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, favorite: bool
) -> dict[str, Any]:
    await projection.writer_lock(session)
    row = await queries.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    _not_in_trash(row)
    if row.favorite != favorite:
        data_cls = ImageFavorited if favorite else ImageUnfavorited
        await emit(session, data_cls(user_id=user_id, image_id=image_id), subject=image_id, after=row.favorite_ts)
    return await queries.get_image(session, user_id=user_id, image_id=image_id)


async def set_published(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, published: bool
) -> dict[str, Any]:
    await projection.writer_lock(session)
    row = await queries.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    _not_in_trash(row)
    if row.published != published:
        data_cls = ImagePublished if published else ImageUnpublished
        await emit(session, data_cls(user_id=user_id, image_id=image_id), subject=image_id, after=row.published_ts)
    return await queries.get_image(session, user_id=user_id, image_id=image_id)


async def trash(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> dict[str, Any]:
    """Move to the trash (again: nothing happens); purged after the retention period."""
    await projection.writer_lock(session)
    row = await queries.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    if row.deleted_at is None:
        await emit(session, ImageTrashed(user_id=user_id, image_id=image_id), subject=image_id, after=row.trash_ts)
    return await queries.get_image(session, user_id=user_id, image_id=image_id)


async def restore(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> dict[str, Any]:
    await projection.writer_lock(session)
    row = await queries.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    if row.deleted_at is not None:
        await emit(session, ImageRestored(user_id=user_id, image_id=image_id), subject=image_id, after=row.trash_ts)
    return await queries.get_image(session, user_id=user_id, image_id=image_id)
