"""Balances and ledger lines."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from .common import examples


class Credits(BaseModel):
    model_config = examples({"available": 15, "reserved": 5})

    available: int
    reserved: int


class LedgerEntry(BaseModel):
    model_config = examples(
        {
            "id": "42",
            "type": "commit",
            "amount": -5,
            "balance_after": 15,
            "generation_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
            "created_at": "2026-11-22T10:00:03Z",
        }
    )

    id: str
    type: str
    amount: int
    balance_after: int
    generation_id: uuid.UUID | None = None
    created_at: datetime
