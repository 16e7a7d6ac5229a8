"""Opaque keyset cursors: (created_at, id) of the last row, so pages stay stable under inserts."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from genimage_common.errors import ValidationFailed


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("invalid cursor") from exc
