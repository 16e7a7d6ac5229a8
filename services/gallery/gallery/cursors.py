"""Opaque keyset cursors: the sort key of the last row of a page, so pages stay stable under
inserts (a row inserted before the cursor's position is never returned on a later page, and
no row after it is skipped).

A cursor is base64url JSON: ``[created_at, id]`` for lists newest first (the format of the
first release), ``["rank", rank, created_at, id]`` for a relevance-ranked search.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from datetime import UTC, datetime

from genimage_common.errors import ValidationFailed


def _pack(parts: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


# What a cursor we hand out can look like: base64url, unpadded; never longer than this.
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+={0,2}")
MAX_LENGTH = 200
# PostgreSQL's timestamptz goes further, but Python's datetime stops at years 1 and 9999: a
# time near either end can overflow once moved to UTC, or when the driver binds it.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def _invalid(detail: str = "invalid cursor") -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"loc": ["cursor"], "msg": "not a cursor of this list"}])


def _unpack(cursor: str) -> list[object]:
    # Anything a caller sends, not only what we encoded: every failure is a ValidationFailed
    # (a reply the caller can show as 422), never an exception that crashes the handler.
    if not isinstance(cursor, str) or len(cursor) > MAX_LENGTH or not _ALPHABET.fullmatch(cursor):
        raise _invalid()
    try:
        padded = cursor.rstrip("=") + "=" * (-len(cursor.rstrip("=")) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise _invalid() from exc
    if not isinstance(parts, list):
        raise _invalid()
    return parts


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = datetime.fromisoformat(value)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(value) from exc
    if not _EARLIEST <= in_utc <= _LATEST:
        raise ValueError(value)
    return parsed


def _uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError(value)
    return uuid.UUID(value)


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    return _pack([created_at.isoformat(), str(row_id)])


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    parts = _unpack(cursor)
    try:
        created, row_id = parts
        return _time(created), _uuid(row_id)
    except (ValueError, TypeError) as exc:
        raise _invalid() from exc


def encode_ranked(rank: float, created_at: datetime, row_id: uuid.UUID) -> str:
    return _pack(["rank", rank, created_at.isoformat(), str(row_id)])


def decode_ranked(cursor: str) -> tuple[float, datetime, uuid.UUID]:
    parts = _unpack(cursor)
    try:
        tag, rank, created, row_id = parts
        if tag != "rank" or isinstance(rank, bool) or not isinstance(rank, int | float):
            raise ValueError(tag)
        if not math.isfinite(float(rank)):  # NaN, or 1e400 read as infinity
            raise ValueError(rank)
        return float(rank), _time(created), _uuid(row_id)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _invalid("invalid cursor: not from a search with q") from exc
