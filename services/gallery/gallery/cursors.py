"""Opaque keyset cursors: the sort key of the last row of a page, so pages stay stable under
inserts (a row inserted before the cursor's position is never returned on a later page, and
no row after it is skipped).

A cursor is base64url JSON: ``[created_at, id]`` for lists newest first (the format of the
first release), ``["rank", rank, created_at, id]`` for a relevance-ranked search.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from genimage_common.errors import ValidationFailed


def _pack(parts: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _unpack(cursor: str) -> list[object]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("invalid cursor") from exc
    if not isinstance(parts, list):
        raise ValidationFailed("invalid cursor")
    return parts


def _time(value: object) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    return _pack([created_at.isoformat(), str(row_id)])


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    parts = _unpack(cursor)
    try:
        created, row_id = parts
        return _time(created), uuid.UUID(str(row_id))
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("invalid cursor") from exc


def encode_ranked(rank: float, created_at: datetime, row_id: uuid.UUID) -> str:
    return _pack(["rank", rank, created_at.isoformat(), str(row_id)])


def decode_ranked(cursor: str) -> tuple[float, datetime, uuid.UUID]:
    parts = _unpack(cursor)
    try:
        tag, rank, created, row_id = parts
        if tag != "rank" or isinstance(rank, bool) or not isinstance(rank, int | float):
            raise ValueError(tag)
        return float(rank), _time(created), uuid.UUID(str(row_id))
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("invalid cursor: not from a search with q") from exc
