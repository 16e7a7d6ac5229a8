"""Empties the trash: an image in it for longer than the retention period is purged — its row
replaced by a tombstone and ``gallery.image_deleted`` {image_id, object_keys} emitted, on
which the generation service deletes the objects. Every replica runs a purger; row locks
(``SKIP LOCKED``) keep them from purging the same image twice."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.events import ImageDeleted, utcnow
from genimage_common.ids import transition_event_id
from genimage_common.outage import Outage

from . import projection
from .commands import emit
from .deps import Deps
from .models import images

log = logging.getLogger(__name__)


async def purge_expired(session: AsyncSession, *, now: datetime, retention: timedelta, limit: int = 100) -> int:
    """Purge up to ``limit`` images trashed before ``now - retention``; returns how many."""
    await projection.writer_lock(session)
    due = (
        await session.execute(
            select(images.c.id, images.c.user_id, images.c.object_key, images.c.thumbnail_key)
            .where(images.c.trashed_at < now - retention, images.c.created_at.is_not(None))
            .order_by(images.c.trashed_at, images.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in due:
        keys = [key for key in (row.object_key, row.thumbnail_key) if key]
        await emit(
            session,
            ImageDeleted(user_id=row.user_id, image_id=row.id, object_keys=keys),
            subject=row.id,
            # One purge per image, ever: a repeated purge is deduplicated downstream.
            event_id=transition_event_id(row.id, "purged"),
        )
    return len(due)


async def purge_forever(deps: Deps, *, outage: Outage | None = None) -> None:
    """Purge what is due, then every ``purge_interval_s``; while the database is away, back off
    (``outage``: the shared ``TRANSIENT_RETRY_*`` pacing unless given) with one log line per
    backoff step instead of a stack trace per round."""
    retention = timedelta(days=deps.settings.trash_retention_days)
    interval = deps.settings.purge_interval_s
    outage = outage or Outage.from_settings("trash purge", log, deps.settings)
    while True:
        pause = interval
        try:
            async with deps.uow.transaction() as session:
                purged = await purge_expired(
                    session, now=utcnow(), retention=retention, limit=deps.settings.purge_batch
                )
            outage.succeeded()
            if purged:
                log.info("trash purged", extra={"count": purged})
                continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The next round purges the same images (nothing was committed).
            pause = outage.failed(exc, interval=interval)
        await asyncio.sleep(pause)
