"""Applies events to the read model: idempotent (the inbox, in the caller's transaction) and
order-independent — every column is merged by a rule whose result does not depend on the
order events arrive in:

- a generation's status only moves forward (queued < running < terminal), its progress is
  the greatest seen, its ``created_at`` the request time once known;
- user-controlled flags (favorite, published, trash, board name, board membership) are
  last-writer-wins registers ordered by ``(event time, event id)``;
- deletions (a purged image, a deleted board or user) are tombstones that win over
  anything that arrives after them.

Commands write through the same ``apply`` so that the live model is, by construction, what a
replay of the streams produces (``python -m gallery rebuild``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.contracts.status import RANK, GenerationStatus
from genimage_common.events import (
    BoardCreated,
    BoardDeleted,
    BoardImageAdded,
    BoardImageRemoved,
    BoardRenamed,
    CreditsCommitted,
    CreditsRefunded,
    Event,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationRequested,
    GenerationStarted,
    ImageDeleted,
    ImageFavorited,
    ImagePublished,
    ImageRestored,
    ImageTrashed,
    ImageUnfavorited,
    ImageUnpublished,
    UserDeleted,
    UserRegistered,
)
from genimage_common.streams import BILLING, GALLERY, GENERATION, IDENTITY

from . import registers
from .models import generations, images, purged_images, users

# `completed` names the provider that delivered: it outranks every `started` attempt.
COMPLETED_PROVIDER_RANK = 1_000_000

PROJECTED = (
    GenerationRequested,
    GenerationStarted,
    GenerationProgress,
    GenerationCompleted,
    GenerationFailed,
    GenerationCanceled,
    CreditsCommitted,
    CreditsRefunded,
    UserRegistered,
    UserDeleted,
    ImageFavorited,
    ImageUnfavorited,
    ImagePublished,
    ImageUnpublished,
    ImageTrashed,
    ImageRestored,
    ImageDeleted,
    BoardCreated,
    BoardRenamed,
    BoardDeleted,
    BoardImageAdded,
    BoardImageRemoved,
)

WRITER_LOCK = "gallery:read-model-writers"

# The inbox key of each stream's events (the name of its durable consumer), shared by the
# live consumers, the commands (which apply their own GALLERY events) and a rebuild.
INBOX = {
    GENERATION: "gallery-generation",
    BILLING: "gallery-billing",
    IDENTITY: "gallery-identity",
    GALLERY: "gallery-gallery",
}


def projects(event: Event[Any]) -> bool:
    """Whether ``apply`` does anything with this event (others are not even recorded)."""
    return isinstance(event.data, PROJECTED)


async def writer_lock(session: AsyncSession) -> None:
    """Every writer of the read model holds this shared for its transaction; the swap of a
    rebuild holds it exclusively, so that no write lands in the schema being replaced."""
    await session.execute(text("SELECT pg_advisory_xact_lock_shared(hashtext(:k))"), {"k": WRITER_LOCK})


async def apply(session: AsyncSession, event: Event[Any]) -> None:
    data = event.data
    match data:
        case GenerationRequested():
            await _requested(session, event, data)
        case GenerationStarted():
            await _upsert_generation(
                session,
                event,
                status=GenerationStatus.RUNNING,
                values={"provider": data.provider, "provider_rank": data.attempt, "started_at": event.time},
                merge={
                    **_provider_merge(data.provider, data.attempt),
                    "started_at": func.least(generations.c.started_at, event.time),
                },
            )
        case GenerationProgress():
            progress = {"progress": data.progress}
            merge = {"progress": func.greatest(generations.c.progress, data.progress)}
            await _upsert_generation(session, event, status=GenerationStatus.RUNNING, values=progress, merge=merge)
        case GenerationCompleted():
            await _ended(
                session,
                event,
                GenerationStatus.SUCCEEDED,
                {"progress": 1.0, "timings": data.timings.model_dump()},
                # `completed` names the provider that delivered, whatever the attempts said.
                inserted={"provider": data.provider, "provider_rank": COMPLETED_PROVIDER_RANK},
                merged=_provider_merge(data.provider, COMPLETED_PROVIDER_RANK),
            )
            await _materialize_images(session, event, data)
        case GenerationFailed():
            await _ended(session, event, GenerationStatus.FAILED, {"error": data.error.model_dump()})
        case GenerationCanceled():
            await _ended(session, event, GenerationStatus.CANCELED, {})
        case CreditsCommitted():
            values = {"charged": data.amount}
            await _upsert_generation(session, event, values=values, merge=values)
        case CreditsRefunded():
            values = {"refunded": data.amount, "refund_reason": data.reason}
            await _upsert_generation(session, event, values=values, merge=values)
        case UserRegistered():
            stmt = insert(users).values(id=data.user_id, registered_at=data.registered_at)
            await session.execute(
                stmt.on_conflict_do_update(index_elements=[users.c.id], set_={"registered_at": data.registered_at})
            )
        case UserDeleted():
            await registers.user_deleted(session, event, data.user_id)
        case ImageFavorited() | ImageUnfavorited():
            favorite = isinstance(data, ImageFavorited)
            await registers.set_image(session, event, data.image_id, data.user_id, "favorite", {"favorite": favorite})
        case ImagePublished() | ImageUnpublished():
            published = isinstance(data, ImagePublished)
            values = {"published": published, "published_at": event.time if published else None}
            await registers.set_image(session, event, data.image_id, data.user_id, "published", values)
        case ImageTrashed() | ImageRestored():
            trashed = isinstance(data, ImageTrashed)
            values = {"trashed_at": event.time if trashed else None}
            await registers.set_image(session, event, data.image_id, data.user_id, "trash", values)
        case ImageDeleted():
            await registers.purge_image(session, event, data.image_id, data.user_id)
        case BoardCreated():
            await registers.board_created(session, event, data)
        case BoardRenamed():
            await registers.board_renamed(session, event, data)
        case BoardDeleted():
            await registers.board_deleted(session, event, data)
        case BoardImageAdded() | BoardImageRemoved():
            await registers.board_membership(session, event, data.board_id, data.image_id, data.user_id)
        case _:
            pass


# --- generations --------------------------------------------------------------------------


def _provider_merge(provider: str, rank: int) -> dict[str, Any]:
    g = generations.c
    wins = func.coalesce(g.provider_rank, -1) < rank
    return {
        "provider": case((wins, provider), else_=g.provider),
        "provider_rank": func.greatest(g.provider_rank, rank),
    }


async def _ended(
    session: AsyncSession,
    event: Event[Any],
    status: GenerationStatus,
    fields: dict[str, Any],
    *,
    inserted: dict[str, Any] | None = None,
    merged: dict[str, Any] | None = None,
) -> None:
    """A terminal event: its ``fields``, and the earliest end time seen."""
    finished = {"finished_at": func.least(generations.c.finished_at, event.time)}
    values = {**fields, **(inserted or {}), "finished_at": event.time}
    await _upsert_generation(
        session, event, status=status, values=values, merge={**fields, **(merged or {}), **finished}
    )


async def _upsert_generation(
    session: AsyncSession,
    event: Event[Any],
    *,
    status: GenerationStatus | None = None,
    values: dict[str, Any],
    merge: dict[str, Any],
) -> None:
    """Insert the generation of ``event`` with ``values`` or merge them into its row with ``merge``."""
    g = generations.c
    t = event.time
    data = event.data
    insert_values = {"id": data.generation_id, "user_id": data.user_id, "created_at": t, "updated_at": t, **values}
    set_: dict[str, Any] = {
        "updated_at": func.greatest(g.updated_at, t),
        # Until the request is seen, the earliest event stands in for its time.
        "created_at": case((g.requested_at.is_(None), func.least(g.created_at, t)), else_=g.created_at),
        **merge,
    }
    if status is not None:
        rank = RANK[status]
        insert_values.update(status=status.value, status_rank=rank)
        forward = g.status_rank < rank
        set_["status"] = case((forward, status.value), else_=g.status)
        set_["status_rank"] = case((forward, rank), else_=g.status_rank)
    stmt = insert(generations).values(**insert_values)
    await session.execute(stmt.on_conflict_do_update(index_elements=[g.id], set_=set_))


async def _requested(session: AsyncSession, event: Event[Any], data: GenerationRequested) -> None:
    requested_at = data.requested_at or event.time
    fields = {
        "kind": data.kind,
        "prompt": data.prompt,
        "negative_prompt": data.negative_prompt,
        "model": data.model,
        "width": data.width,
        "height": data.height,
        "n": data.n,
        "seed": data.seed,
        "output_format": data.output_format,
        "cost": data.cost,
        "requested_at": requested_at,
    }
    await _upsert_generation(
        session,
        event,
        status=GenerationStatus.QUEUED,
        values={**fields, "created_at": requested_at},
        merge={**fields, "created_at": requested_at},
    )
    # Images projected before their request learn the prompt now.
    await session.execute(
        update(images).where(images.c.generation_id == data.generation_id).values(prompt=data.prompt, kind=data.kind)
    )


async def _materialize_images(session: AsyncSession, event: Event[Any], data: GenerationCompleted) -> None:
    gen = (
        await session.execute(
            select(generations.c.prompt, generations.c.kind).where(generations.c.id == data.generation_id)
        )
    ).first()
    ids = [out.image_id for out in data.outputs]
    gone = set((await session.scalars(select(purged_images.c.image_id).where(purged_images.c.image_id.in_(ids)))).all())
    for out in data.outputs:
        if out.image_id in gone:
            continue
        media = {
            "generation_id": data.generation_id,
            "index": out.index,
            "object_key": out.object_key,
            "thumbnail_key": out.thumbnail_key,
            "content_type": out.content_type,
            "width": out.width,
            "height": out.height,
            "bytes": out.bytes,
            "sha256": out.sha256,
            "duration_s": out.duration_s,
        }
        stmt = insert(images).values(
            id=out.image_id,
            user_id=data.user_id,
            prompt=gen.prompt if gen else None,
            kind=gen.kind if gen else None,
            created_at=event.time,
            **media,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[images.c.id],
                set_={
                    **media,
                    "prompt": func.coalesce(images.c.prompt, stmt.excluded.prompt),
                    "kind": func.coalesce(images.c.kind, stmt.excluded.kind),
                    "created_at": func.coalesce(images.c.created_at, stmt.excluded.created_at),
                },
            )
        )
    # A user deleted before these outputs were seen: they go to the trash as the others did.
    deleted = (
        await session.execute(select(users.c.deleted_at, users.c.deleted_eid).where(users.c.id == data.user_id))
    ).first()
    if deleted is not None and deleted.deleted_at is not None:
        await registers.trash_all(session, data.user_id, deleted.deleted_at, deleted.deleted_eid, images.c.id.in_(ids))
