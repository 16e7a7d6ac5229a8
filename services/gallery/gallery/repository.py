"""The repository of the read model: every read, always scoped to its owner (another user's id
is not found), and the row locks the commands decide on (``for_update``). SQL only: it never
writes nor commits.

Lists are keyset-paginated, newest first with ties broken by id (a search with ``q`` ranks by
relevance first); sort keys never change once a row is visible, so a page never repeats or
skips a row whatever is inserted between two requests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Row, Select, and_, func, literal, not_, or_, select, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.contracts.status import GenerationStatus
from genimage_common.errors import NotFound

from . import cursors
from .models import board_images, boards, generations, images
from .records import board_dict, generation_dict, image_dict, public_image

STATUSES = tuple(GenerationStatus)
# Every column but the search vector, which no answer needs (and which is the widest).
IMAGE_COLUMNS = [c for c in images.c if c.name != "search"]


def _page(stmt: Any, table: Any, cursor: str | None, limit: int, key: str = "created_at") -> Any:
    column = table.c[key]
    if cursor:
        at, row_id = cursors.decode(cursor)
        stmt = stmt.where(tuple_(column, table.c.id) < tuple_(at, row_id))
    return stmt.order_by(column.desc(), table.c.id.desc()).limit(limit + 1)


def _next(rows: list[Row[Any]], limit: int, key: str = "created_at") -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return cursors.encode(getattr(last, key), last.id)


# --- generations --------------------------------------------------------------------------


async def _queue_position(session: AsyncSession, row: Row[Any]) -> int | None:
    if row.status != GenerationStatus.QUEUED or row.requested_at is None:
        return None
    ahead = await session.scalar(
        select(func.count())
        .select_from(generations)
        .where(
            generations.c.status == GenerationStatus.QUEUED.value,
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
            select(*IMAGE_COLUMNS)
            .where(
                images.c.generation_id.in_(generation_ids),
                images.c.trashed_at.is_(None),
                images.c.created_at.is_not(None),
            )
            .order_by(images.c.index)
        )
        for r in rows:
            found[r.generation_id].append(image_dict(r))
    return found


def _visible_generations(user_id: uuid.UUID) -> Select[Any]:
    # A generation is shown once its request is seen (billing or worker events may come first).
    return select(generations).where(generations.c.user_id == user_id, generations.c.kind.is_not(None))


async def get_generation(session: AsyncSession, *, user_id: uuid.UUID, generation_id: uuid.UUID) -> dict[str, Any]:
    row = (await session.execute(_visible_generations(user_id).where(generations.c.id == generation_id))).first()
    if row is None:
        raise NotFound("generation not found")
    outputs = await _outputs(session, [row.id])
    return generation_dict(row, outputs[row.id], await _queue_position(session, row))


async def list_generations(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> dict[str, Any]:
    stmt = _page(_visible_generations(user_id), generations, cursor, limit)
    rows = list((await session.execute(stmt)).all())
    outputs = await _outputs(session, [r.id for r in rows[:limit]])
    items = [generation_dict(r, outputs[r.id], await _queue_position(session, r)) for r in rows[:limit]]
    return {"items": items, "next_cursor": _next(rows, limit)}


# --- images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFilter:
    favorite: bool | None = None
    published: bool | None = None
    kind: str | None = None
    board_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    trashed: bool = False


def _board_ids_column() -> Any:
    """The boards an image is on, as one column of the image's own row (no second query)."""
    bi = board_images.c
    return (
        select(func.array_agg(aggregate_order_by(bi.board_id, bi.board_id)))
        .select_from(board_images.join(boards, boards.c.id == bi.board_id))
        .where(
            bi.image_id == images.c.id,
            bi.member,
            boards.c.deleted_at.is_(None),
            boards.c.created_at.is_not(None),
        )
        .scalar_subquery()
        .label("board_ids")
    )


BOARD_IDS = _board_ids_column()  # built once: statements are immutable


def _flag(column: Any, value: bool) -> Any:
    # Plain `favorite` / `NOT favorite` so the planner matches the partial indexes.
    return column if value else not_(column)


def images_statement(*, user_id: uuid.UUID, limit: int, cursor: str | None, filters: ImageFilter) -> Select[Any]:
    """The SQL of one page of a user's images (also what bench/gallery.py runs directly)."""
    i = images.c
    stmt = select(*IMAGE_COLUMNS, BOARD_IDS).where(
        i.user_id == user_id,
        i.created_at.is_not(None),  # stubs are not shown
        i.trashed_at.is_not(None) if filters.trashed else i.trashed_at.is_(None),
    )
    if filters.favorite is not None:
        stmt = stmt.where(_flag(i.favorite, filters.favorite))
    if filters.published is not None:
        stmt = stmt.where(_flag(i.published, filters.published))
    if filters.kind is not None:
        stmt = stmt.where(i.kind == filters.kind)
    if filters.since is not None:
        stmt = stmt.where(i.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(i.created_at < filters.until)
    if filters.board_id is not None:
        on_board = select(board_images.c.image_id).where(
            board_images.c.board_id == filters.board_id, board_images.c.member
        )
        stmt = stmt.where(i.id.in_(on_board))
    if not filters.q:
        return _page(stmt, images, cursor, limit)
    query = func.websearch_to_tsquery("english", filters.q)
    rank = func.ts_rank(i.search, query).label("rank")
    stmt = stmt.add_columns(rank).where(i.search.op("@@")(query))
    if cursor:
        r, at, row_id = cursors.decode_ranked(cursor)
        stmt = stmt.where(tuple_(rank, i.created_at, i.id) < tuple_(literal(r, Float), at, row_id))
    return stmt.order_by(rank.desc(), i.created_at.desc(), i.id.desc()).limit(limit + 1)


async def list_images(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None, filters: ImageFilter
) -> dict[str, Any]:
    if filters.board_id is not None:
        await get_board_row(session, user_id=user_id, board_id=filters.board_id)
    stmt = images_statement(user_id=user_id, limit=limit, cursor=cursor, filters=filters)
    rows = list((await session.execute(stmt)).all())
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = (
            cursors.encode_ranked(last.rank, last.created_at, last.id)
            if filters.q
            else cursors.encode(last.created_at, last.id)
        )
    return {"items": [image_dict(r) for r in page], "next_cursor": next_cursor}


async def get_image_row(
    session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID, for_update: bool = False
) -> Row[Any]:
    """A user's image, in the trash or not; a stub or another user's image is not found.
    Locked (for a command), it comes without its boards."""
    columns = IMAGE_COLUMNS if for_update else [*IMAGE_COLUMNS, BOARD_IDS]
    stmt = select(*columns).where(
        images.c.id == image_id, images.c.user_id == user_id, images.c.created_at.is_not(None)
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("image not found")
    return row


async def get_image(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> dict[str, Any]:
    return image_dict(await get_image_row(session, user_id=user_id, image_id=image_id))


# --- boards -------------------------------------------------------------------------------


async def get_board_row(
    session: AsyncSession, *, user_id: uuid.UUID, board_id: uuid.UUID, for_update: bool = False
) -> Row[Any]:
    stmt = select(boards).where(
        boards.c.id == board_id,
        boards.c.user_id == user_id,
        boards.c.created_at.is_not(None),
        boards.c.deleted_at.is_(None),
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("board not found")
    return row


def _image_count(board_id: Any) -> Any:
    return (
        select(func.count())
        .select_from(board_images.join(images, images.c.id == board_images.c.image_id))
        .where(
            board_images.c.board_id == board_id,
            board_images.c.member,
            images.c.trashed_at.is_(None),
            images.c.created_at.is_not(None),
        )
        .scalar_subquery()
    )


async def get_board(session: AsyncSession, *, user_id: uuid.UUID, board_id: uuid.UUID) -> dict[str, Any]:
    await get_board_row(session, user_id=user_id, board_id=board_id)
    row = (
        await session.execute(
            select(boards, _image_count(boards.c.id).label("image_count")).where(boards.c.id == board_id)
        )
    ).one()
    return board_dict(row)


async def list_boards(session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None) -> dict[str, Any]:
    stmt = select(boards, _image_count(boards.c.id).label("image_count")).where(
        boards.c.user_id == user_id, boards.c.created_at.is_not(None), boards.c.deleted_at.is_(None)
    )
    rows = list((await session.execute(_page(stmt, boards, cursor, limit))).all())
    return {"items": [board_dict(r) for r in rows[:limit]], "next_cursor": _next(rows, limit)}


# --- feed and stats -----------------------------------------------------------------------


def _in_feed() -> list[Any]:
    return [images.c.published, images.c.trashed_at.is_(None), images.c.object_key.is_not(None)]


async def feed(session: AsyncSession, *, limit: int, cursor: str | None, kind: str | None = None) -> dict[str, Any]:
    stmt = select(*IMAGE_COLUMNS).where(*_in_feed())
    if kind is not None:
        stmt = stmt.where(images.c.kind == kind)
    rows = list((await session.execute(_page(stmt, images, cursor, limit, key="published_at"))).all())
    return {"items": [public_image(r) for r in rows[:limit]], "next_cursor": _next(rows, limit, key="published_at")}


async def get_published_image(session: AsyncSession, *, image_id: uuid.UUID) -> dict[str, Any]:
    """A published image with its object keys (for the public content redirect)."""
    row = (await session.execute(select(*IMAGE_COLUMNS).where(images.c.id == image_id, *_in_feed()))).first()
    if row is None:
        raise NotFound("image not found")
    return {**public_image(row), "object_key": row.object_key, "thumbnail_key": row.thumbnail_key}


async def stats(session: AsyncSession, *, user_id: uuid.UUID) -> dict[str, Any]:
    by_status = dict.fromkeys(STATUSES, 0)
    rows = await session.execute(
        select(generations.c.status, func.count())
        .where(generations.c.user_id == user_id, generations.c.kind.is_not(None))
        .group_by(generations.c.status)
    )
    for status, count in rows:
        by_status[status] = count
    spent = await session.scalar(
        select(func.coalesce(func.sum(generations.c.charged), 0)).where(generations.c.user_id == user_id)
    )
    live = images.c.trashed_at.is_(None)
    counts = (
        await session.execute(
            select(
                func.count().filter(live, images.c.kind.is_distinct_from("video")).label("images"),
                func.count().filter(live, images.c.kind == "video").label("videos"),
                func.count().filter(live, images.c.favorite).label("favorites"),
                func.count().filter(live, images.c.published).label("published"),
                func.count().filter(images.c.trashed_at.is_not(None)).label("trashed"),
            ).where(images.c.user_id == user_id, images.c.created_at.is_not(None))
        )
    ).one()
    board_count = await session.scalar(
        select(func.count()).where(
            boards.c.user_id == user_id, boards.c.created_at.is_not(None), boards.c.deleted_at.is_(None)
        )
    )
    return {
        "generations": {**by_status, "total": sum(by_status.values())},
        "images": counts.images,
        "videos": counts.videos,
        "favorites": counts.favorites,
        "published": counts.published,
        "trashed": counts.trashed,
        "boards": board_count or 0,
        "credits_spent": int(spent or 0),
    }
