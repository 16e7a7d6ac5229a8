"""The user's statement: one line per transfer of their credits, newest first, in the shape of
``genimage_common.contracts.records.LedgerLine``; keyset pages by transfer id."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.errors import ValidationFailed

from . import repository as repo


async def ledger_page(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The user's statement, newest first: one line per transfer, ``amount`` the signed change of
    the available balance and ``balance_after`` the available balance after it."""
    before: int | None = None
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 19:
            raise ValidationFailed("invalid cursor", errors=[{"loc": ["cursor"], "msg": "not a cursor of this list"}])
        before = int(cursor)
    rows = await repo.list_transfers(session, user_id, limit=limit + 1, before_id=before)
    items = [
        {
            "id": str(r.id),
            "type": r.kind,
            "amount": r.available_delta,
            "balance_after": r.available_after,
            "generation_id": str(r.generation_id) if r.generation_id else None,
            "created_at": r.created_at.isoformat().replace("+00:00", "Z"),
        }
        for r in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return items, next_cursor
