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

from . import projection, repository
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


# The two flags of an image: its column (and clock), the event that sets it, the one that clears it.
FAVORITE = ("favorite", ImageFavorited, ImageUnfavorited)
PUBLISHED = ("published", ImagePublished, ImageUnpublished)


async def _set_flag(
    session: AsyncSession,
    flag: tuple[str, type[EventData], type[EventData]],
    user_id: uuid.UUID,
    image_id: uuid.UUID,
    value: bool,
) -> dict[str, Any]:
    """Set a flag of an image not in the trash, by its event, unless it already has that value."""
    register, on, off = flag
    await projection.writer_lock(session)
    row = await repository.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    if row.trashed_at is not None:
        raise Conflict("the image is in the trash; restore it first")
    if getattr(row, register) != value:
        data = (on if value else off)(user_id=user_id, image_id=image_id)
        await emit(session, data, subject=image_id, after=getattr(row, f"{register}_ts"))
    return await repository.get_image(session, user_id=user_id, image_id=image_id)


async def set_favorite(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, favorite: bool
) -> dict[str, Any]:
    return await _set_flag(session, FAVORITE, user_id, image_id, favorite)


async def set_published(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, published: bool
) -> dict[str, Any]:
    return await _set_flag(session, PUBLISHED, user_id, image_id, published)


async def trash(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> dict[str, Any]:
    """Move to the trash (again: nothing happens); purged after the retention period."""
    await projection.writer_lock(session)
    row = await repository.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    if row.trashed_at is None:
        await emit(session, ImageTrashed(user_id=user_id, image_id=image_id), subject=image_id, after=row.trash_ts)
    return await repository.get_image(session, user_id=user_id, image_id=image_id)


async def restore(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> dict[str, Any]:
    await projection.writer_lock(session)
    row = await repository.get_image_row(session, user_id=user_id, image_id=image_id, for_update=True)
    if row.trashed_at is not None:
        await emit(session, ImageRestored(user_id=user_id, image_id=image_id), subject=image_id, after=row.trash_ts)
    return await repository.get_image(session, user_id=user_id, image_id=image_id)
