"""The user-controlled state of the read model as last-writer-wins registers and tombstones.

A register (an image's favorite, publication or trash; a board's name; a board membership)
stores the clock ``(event time, event id)`` of the event that last set it, and an event only
changes a register whose clock is older — so the result does not depend on arrival order. A
row first touched by such an event, before the event that creates it, is a stub that no query
shows. Deletions (a purged image, a deleted board or user) are tombstones that win over
anything arriving after them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime

from genimage_common.events import BoardCreated, BoardDeleted, BoardImageAdded, BoardRenamed, Event

from .models import board_images, boards, images, purged_images, users

# --- clocks -------------------------------------------------------------------------------


def clock_values(register: str, event: Event[Any]) -> dict[str, Any]:
    return {f"{register}_ts": event.time, f"{register}_eid": event.id}


def older(table: Table, register: str, at: datetime, eid: uuid.UUID) -> ColumnElement[bool]:
    """The register's clock is older than ``(at, eid)``: the change made at that clock wins."""
    ts, ids = table.c[f"{register}_ts"], table.c[f"{register}_eid"]
    clock = tuple_(literal(at, DateTime(timezone=True)), literal(eid, UUID(as_uuid=True)))
    return or_(ts.is_(None), tuple_(ts, ids) < clock)


# --- users --------------------------------------------------------------------------------


async def user_deleted(session: AsyncSession, event: Event[Any], user_id: uuid.UUID) -> None:
    stmt = insert(users).values(id=user_id, deleted_at=event.time, deleted_eid=event.id)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[users.c.id],
            set_={"deleted_at": event.time, "deleted_eid": event.id},
            where=or_(
                users.c.deleted_at.is_(None),
                tuple_(users.c.deleted_at, users.c.deleted_eid)
                < tuple_(literal(event.time, DateTime(timezone=True)), literal(event.id, UUID(as_uuid=True))),
            ),
        )
    )
    # Everything of a deleted user goes to the trash (out of the feed), then is purged.
    await trash_all(session, user_id, event.time, event.id, literal(True))


async def trash_all(
    session: AsyncSession, user_id: uuid.UUID, at: datetime, eid: uuid.UUID, where: ColumnElement[bool]
) -> None:
    await session.execute(
        update(images)
        .where(images.c.user_id == user_id, where, older(images, "trash", at, eid))
        .values(trashed_at=at, trash_ts=at, trash_eid=eid)
    )


# --- images -------------------------------------------------------------------------------


async def is_purged(session: AsyncSession, image_id: uuid.UUID) -> bool:
    found = await session.scalar(select(purged_images.c.image_id).where(purged_images.c.image_id == image_id))
    return found is not None


async def set_image(
    session: AsyncSession,
    event: Event[Any],
    image_id: uuid.UUID,
    user_id: uuid.UUID,
    register: str,
    values: dict[str, Any],
) -> None:
    """Set one register of an image if ``event`` is newer than its clock (a stub if unseen)."""
    if await is_purged(session, image_id):
        return
    clock = clock_values(register, event)
    stmt = insert(images).values(id=image_id, user_id=user_id, **values, **clock)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[images.c.id], set_={**values, **clock}, where=older(images, register, event.time, event.id)
        )
    )


async def purge_image(session: AsyncSession, event: Event[Any], image_id: uuid.UUID, user_id: uuid.UUID) -> None:
    stmt = insert(purged_images).values(image_id=image_id, user_id=user_id, purged_at=event.time)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[purged_images.c.image_id],
            set_={"purged_at": func.least(purged_images.c.purged_at, event.time)},
        )
    )
    await session.execute(delete(board_images).where(board_images.c.image_id == image_id))
    await session.execute(delete(images).where(images.c.id == image_id))


# --- boards -------------------------------------------------------------------------------


def _name_merge(event: Event[Any], name: str) -> dict[str, Any]:
    wins = older(boards, "name", event.time, event.id)
    return {
        "name": case((wins, name), else_=boards.c.name),
        "name_ts": case((wins, event.time), else_=boards.c.name_ts),
        "name_eid": case((wins, event.id), else_=boards.c.name_eid),
    }


async def board_created(session: AsyncSession, event: Event[Any], data: BoardCreated) -> None:
    stmt = insert(boards).values(
        id=data.board_id,
        user_id=data.user_id,
        name=data.board_name,
        created_at=event.time,
        **clock_values("name", event),
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[boards.c.id],
            set_={"created_at": func.least(boards.c.created_at, event.time), **_name_merge(event, data.board_name)},
        )
    )


async def board_renamed(session: AsyncSession, event: Event[Any], data: BoardRenamed) -> None:
    stmt = insert(boards).values(
        id=data.board_id, user_id=data.user_id, name=data.board_name, **clock_values("name", event)
    )
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[boards.c.id], set_=_name_merge(event, data.board_name))
    )


async def board_deleted(session: AsyncSession, event: Event[Any], data: BoardDeleted) -> None:
    stmt = insert(boards).values(id=data.board_id, user_id=data.user_id, deleted_at=event.time)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[boards.c.id], set_={"deleted_at": func.least(boards.c.deleted_at, event.time)}
        )
    )
    await session.execute(delete(board_images).where(board_images.c.board_id == data.board_id))


async def board_membership(
    session: AsyncSession, event: Event[Any], board_id: uuid.UUID, image_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    board_gone = await session.scalar(
        select(boards.c.id).where(boards.c.id == board_id, boards.c.deleted_at.is_not(None))
    )
    if board_gone is not None or await is_purged(session, image_id):
        return
    member = isinstance(event.data, BoardImageAdded)
    values = {"member": member, "added_at": event.time if member else None, **clock_values("member", event)}
    stmt = insert(board_images).values(board_id=board_id, image_id=image_id, user_id=user_id, **values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[board_images.c.board_id, board_images.c.image_id],
            set_=values,
            where=older(board_images, "member", event.time, event.id),
        )
    )
