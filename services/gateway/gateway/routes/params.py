"""Query parameters shared by every list."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# Cursors are opaque, but every one this API hands out is base64url (gallery lists) or ASCII
# digits (the ledger): anything else is refused here, before it reaches a service, so that a
# value no service can parse is a 422 at once rather than whatever the service makes of it.
# An empty cursor is refused too: a client that sends back `next_cursor: null` as `cursor=`
# would otherwise read the first page forever.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+={0,2}$"

Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page",
    ),
]
Limit = Annotated[int, Query(ge=1, le=100)]
