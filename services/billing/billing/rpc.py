"""Request/reply handlers (``rpc.billing.*``, queue group ``billing``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from faststream.nats import NatsRouter
from pydantic import BaseModel, Field

from genimage_common.subjects import rpc

from . import ledger
from .deps import BillingDeps

router = NatsRouter()
QUEUE = "billing"


class ReserveRequest(BaseModel):
    generation_id: uuid.UUID
    user_id: uuid.UUID
    amount: int = Field(gt=0)
    units: int = Field(1, ge=1)


class UserRequest(BaseModel):
    user_id: uuid.UUID


class LedgerRequest(BaseModel):
    user_id: uuid.UUID
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class GrantRequest(BaseModel):
    user_id: uuid.UUID
    amount: int = Field(gt=0)
    reason: Literal["purchase", "admin", "promo"]
    reference: str = Field(min_length=1, max_length=255)


@router.subscriber(rpc("billing", "reserve"), queue=QUEUE)
async def reserve(req: ReserveRequest, deps: BillingDeps) -> dict:
    async with deps.sessions.begin() as session:
        hold, bal = await ledger.reserve(
            session,
            user_id=req.user_id,
            generation_id=req.generation_id,
            amount=req.amount,
            units=req.units,
            ttl=timedelta(seconds=deps.settings.hold_ttl_s),
        )
    deps.relay.wake()
    return {
        "hold": {
            "generation_id": str(hold.generation_id),
            "amount": hold.amount,
            "status": hold.status,
            "expires_at": hold.expires_at.isoformat(),
        },
        "balance": {"available": bal.available, "reserved": bal.reserved},
    }


@router.subscriber(rpc("billing", "balance"), queue=QUEUE)
async def balance(req: UserRequest, deps: BillingDeps) -> dict:
    async with deps.sessions() as session:
        bal = await ledger.balance(session, user_id=req.user_id)
    return {"available": bal.available, "reserved": bal.reserved}


@router.subscriber(rpc("billing", "ledger"), queue=QUEUE)
async def ledger_entries(req: LedgerRequest, deps: BillingDeps) -> dict:
    async with deps.sessions() as session:
        items, next_cursor = await ledger.ledger_page(session, user_id=req.user_id, limit=req.limit, cursor=req.cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.subscriber(rpc("billing", "grant"), queue=QUEUE)
async def grant(req: GrantRequest, deps: BillingDeps) -> dict:
    async with deps.sessions.begin() as session:
        bal = await ledger.grant(
            session, user_id=req.user_id, amount=req.amount, reason=req.reason, reference=req.reference
        )
    deps.relay.wake()
    return {"available": bal.available, "reserved": bal.reserved}
