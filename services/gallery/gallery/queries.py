"""Reads of the read model, always scoped to their owner: another user's id is not found."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import NotFound

from . import cursors
from .models import generations, images


def image_dict(r: Row[Any]) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "generation_id": str(r.generation_id),
        "index": r.index,
        "kind": r.kind,
        "prompt": r.prompt,
        "content_type": r.content_type,
        "width": r.width,
        "height": r.height,
        "bytes": r.bytes,
        "sha256": r.sha256,
        "duration_s": r.duration_s,
        "favorite": r.favorite,
        "published": r.published,
        "created_at": _iso(r.created_at),
        "object_key": r.object_key,
        "thumbnail_key": r.thumbnail_key,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def generation_dict(r: Row[Any], outputs: list[dict[str, Any]], queue_position: int | None) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "status": r.status,
        "kind": r.kind,
        "prompt": r.prompt,
        "negative_prompt": r.negative_prompt,
        "model": r.model,
        "width": r.width,
        "height": r.height,
        "n": r.n,
        "seed": r.seed,
        "output_format": r.output_format,
        "progress": r.progress,
        "cost": r.charged if r.charged is not None else r.cost,
        "outputs": outputs,
        "error": r.error,
        "timings": r.timings,
        "queue_position": queue_position,
        "created_at": _iso(r.requested_at or r.created_at),
        "updated_at": _iso(r.updated_at),
    }


def _page(stmt: Any, table: Any, cursor: str | None, limit: int) -> Any:
    if cursor:
        created, row_id = cursors.decode(cursor)
        stmt = stmt.where(tuple_(table.c.created_at, table.c.id) < tuple_(created, row_id))
    return stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)


def _next(rows: list[Row[Any]], limit: int) -> str | None:
    return cursors.encode(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None


async def _queue_position(session: AsyncSession, row: Row[Any]) -> int | None:
    if row.status != "queued" or row.requested_at is None:
        return None
    ahead = await session.scalar(
        select(func.count())
        .select_from(generations)
        .where(
            generations.c.status == "queued",
            or_(
                generations.c.requested_at < row.requested_at,
                and_(generations.c.requested_at == row.requested_at, generations.c.id < row.id),
            ),
        )
    )
    return int(ahead or 0)


async def _outputs(session: AsyncSession, generation_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    found: dict[uuid.UUID, list[dict[str, Any]]] = {gid: [] for gid in generation_ids}
    if generation_ids:
        rows = await session.execute(
            select(images)
            .where(images.c.generation_id.in_(generation_ids), images.c.deleted_at.is_(None))
            .order_by(images.c.index)
        )
        for r in rows:
            found[r.generation_id].append(image_dict(r))
    return found


async def get_generation(session: AsyncSession, *, user_id: uuid.UUID, generation_id: uuid.UUID) -> dict[str, Any]:
    row = (
        await session.execute(
            select(generations).where(generations.c.id == generation_id, generations.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound("generation not found")
    outputs = await _outputs(session, [row.id])
    return generation_dict(row, outputs[row.id], await _queue_position(session, row))


async def list_generations(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> dict[str, Any]:
    stmt = _page(select(generations).where(generations.c.user_id == user_id), generations, cursor, limit)
    rows = list((await session.execute(stmt)).all())
    outputs = await _outputs(session, [r.id for r in rows[:limit]])
    items = [generation_dict(r, outputs[r.id], await _queue_position(session, r)) for r in rows[:limit]]
    return {"items": items, "next_cursor": _next(rows, limit)}


async def get_image(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, include_deleted: bool = False
) -> Row[Any]:
    stmt = select(images).where(images.c.id == image_id, images.c.user_id == user_id)
    if not include_deleted:
        stmt = stmt.where(images.c.deleted_at.is_(None))
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("image not found")
    return row


async def list_images(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    favorite: bool | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    stmt = select(images).where(images.c.user_id == user_id, images.c.deleted_at.is_(None))
    if favorite is not None:
        stmt = stmt.where(images.c.favorite.is_(favorite))
    if kind is not None:
        stmt = stmt.where(images.c.kind == kind)
    rows = list((await session.execute(_page(stmt, images, cursor, limit))).all())
    return {"items": [image_dict(r) for r in rows[:limit]], "next_cursor": _next(rows, limit)}
