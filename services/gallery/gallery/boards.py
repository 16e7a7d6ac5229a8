"""Boards: a user's collections. Deleting a board keeps its images; an image may sit on several
boards. Every change is a ``gallery.board_*`` event applied through ``commands.emit``."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import Conflict, ValidationFailed
from genimage_common.events import BoardCreated, BoardDeleted, BoardImageAdded, BoardImageRemoved, BoardRenamed
from genimage_common.ids import new_id

from . import projection, repository
from .commands import emit
from .models import board_images, boards


def clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > 100:
        raise ValidationFailed("a board name has 1 to 100 characters", errors=[{"loc": ["name"], "msg": "length"}])
    return cleaned


async def create(session: AsyncSession, *, user_id: uuid.UUID, name: str, max_boards: int) -> dict[str, Any]:
    await projection.writer_lock(session)
    name = clean_name(name)
    # Serialises one user's creations, so the limit holds under concurrent requests.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"gallery:boards:{user_id}"))))
    count = await session.scalar(select(func.count()).where(boards.c.user_id == user_id, boards.c.deleted_at.is_(None)))
    if (count or 0) >= max_boards:
        raise Conflict(f"a user has at most {max_boards} boards", limit=max_boards)
    board_id = new_id()
    await emit(session, BoardCreated(user_id=user_id, board_id=board_id, board_name=name), subject=board_id)
    return await repository.get_board(session, user_id=user_id, board_id=board_id)


async def rename(session: AsyncSession, *, user_id: uuid.UUID, board_id: uuid.UUID, name: str) -> dict[str, Any]:
    await projection.writer_lock(session)
    name = clean_name(name)
    row = await repository.get_board_row(session, user_id=user_id, board_id=board_id, for_update=True)
    if row.name != name:
        data = BoardRenamed(user_id=user_id, board_id=board_id, board_name=name)
        await emit(session, data, subject=board_id, after=row.name_ts)
    return await repository.get_board(session, user_id=user_id, board_id=board_id)


async def delete(session: AsyncSession, *, user_id: uuid.UUID, board_id: uuid.UUID) -> None:
    await projection.writer_lock(session)
    await repository.get_board_row(session, user_id=user_id, board_id=board_id, for_update=True)
    await emit(session, BoardDeleted(user_id=user_id, board_id=board_id), subject=board_id)


async def _membership(session: AsyncSession, board_id: uuid.UUID, image_id: uuid.UUID) -> Any:
    return (
        await session.execute(
            select(board_images.c.member, board_images.c.member_ts).where(
                board_images.c.board_id == board_id, board_images.c.image_id == image_id
            )
        )
    ).first()


async def set_membership(
    session: AsyncSession, *, user_id: uuid.UUID, board_id: uuid.UUID, image_id: uuid.UUID, member: bool
) -> None:
    """Add an image to a board or remove it; both idempotent. The board's row lock orders
    concurrent changes of its membership."""
    await projection.writer_lock(session)
    await repository.get_board_row(session, user_id=user_id, board_id=board_id, for_update=True)
    image = await repository.get_image_row(session, user_id=user_id, image_id=image_id)
    if member and image.trashed_at is not None:
        raise Conflict("the image is in the trash; restore it first")
    current = await _membership(session, board_id, image_id)
    if (current is not None and current.member) == member:
        return
    data_cls = BoardImageAdded if member else BoardImageRemoved
    await emit(
        session,
        data_cls(user_id=user_id, board_id=board_id, image_id=image_id),
        subject=board_id,
        after=current.member_ts if current is not None else None,
    )
