"""Request/reply handlers (``rpc.billing.*``, queue group ``billing``): parse, call the ledger in
one transaction, shape the reply. Domain errors become ``{"error": {...}}`` replies."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from faststream.nats import NatsRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genimage_common.subjects import rpc

from . import ledger
from .deps import BillingDeps
from .transaction import transaction

router = NatsRouter()
QUEUE = "billing"
# Requests handled at once per replica (each holds a database connection while it runs).
WORKERS = 16
MAX_ENTRY_ID = 2**63 - 1


class Request(BaseModel):
    # Unknown fields are ignored: a newer caller can talk to an older replica during a rollout.
    model_config = ConfigDict(extra="ignore")


class ReserveRequest(Request):
    generation_id: uuid.UUID
    user_id: uuid.UUID
    amount: int = Field(gt=0, le=ledger.MAX_AMOUNT)
    units: int = Field(1, ge=1, le=1000)


class UserRequest(Request):
    user_id: uuid.UUID


class LedgerRequest(Request):
    user_id: uuid.UUID
    limit: int = Field(20, ge=1, le=100)
    # The id of the last entry of the previous page: ASCII digits within a BIGINT. Checked
    # here, where a bad value becomes a validation reply; past this point a value such as "²"
    # ("²".isdigit() is true, int("²") raises) would crash the handler, which never replies.
    cursor: str | None = Field(None, min_length=1, max_length=19, pattern=r"^[0-9]+$")

    @field_validator("cursor")
    @classmethod
    def _within_bigint(cls, value: str | None) -> str | None:
        if value is not None and int(value) > MAX_ENTRY_ID:
            raise ValueError("not a cursor of this list")
        return value


class GrantRequest(Request):
    user_id: uuid.UUID
    amount: int = Field(gt=0, le=ledger.MAX_AMOUNT)
    reason: Literal["purchase", "admin", "promo"]
    reference: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")


class PlansRequest(Request):
    pass


class ReleaseRequest(Request):
    generation_id: uuid.UUID
    user_id: uuid.UUID


def _balance(bal: ledger.Balance) -> dict[str, int]:
    return {"available": bal.available, "reserved": bal.held}


@router.subscriber(rpc("billing", "reserve"), queue=QUEUE, max_workers=WORKERS)
async def reserve(req: ReserveRequest, deps: BillingDeps) -> dict:
    async with transaction(deps) as session:
        hold, bal = await ledger.reserve(
            session,
            user_id=req.user_id,
            generation_id=req.generation_id,
            amount=req.amount,
            units=req.units,
            ttl=timedelta(seconds=deps.settings.hold_ttl_s),
        )
    return {
        "hold": {
            "generation_id": str(hold.generation_id),
            "amount": hold.amount,
            "units": hold.units,
            "status": hold.status,
            "expires_at": hold.expires_at.isoformat(),
        },
        "balance": _balance(bal),
    }


@router.subscriber(rpc("billing", "release"), queue=QUEUE, max_workers=WORKERS)
async def release(req: ReleaseRequest, deps: BillingDeps) -> dict:
    """The gateway reserved credits but could not queue the generation: refund the hold now
    rather than when it expires. Idempotent; nothing happens to a hold already resolved."""
    async with transaction(deps) as session:
        outcome, amount = await ledger.release(session, generation_id=req.generation_id, user_id=req.user_id)
        bal = await ledger.balance(session, user_id=req.user_id)
    released = outcome == ledger.Outcome.VOIDED
    return {"released": released, "outcome": outcome.value, "amount": amount, "balance": _balance(bal)}


@router.subscriber(rpc("billing", "balance"), queue=QUEUE, max_workers=WORKERS)
async def balance(req: UserRequest, deps: BillingDeps) -> dict:
    async with deps.sessions() as session:
        bal = await ledger.balance(session, user_id=req.user_id)
    return _balance(bal)


@router.subscriber(rpc("billing", "ledger"), queue=QUEUE, max_workers=WORKERS)
async def ledger_entries(req: LedgerRequest, deps: BillingDeps) -> dict:
    async with deps.sessions() as session:
        items, next_cursor = await ledger.ledger_page(session, user_id=req.user_id, limit=req.limit, cursor=req.cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.subscriber(rpc("billing", "grant"), queue=QUEUE, max_workers=WORKERS)
async def grant(req: GrantRequest, deps: BillingDeps) -> dict:
    async with transaction(deps) as session:
        bal = await ledger.grant(
            session, user_id=req.user_id, amount=req.amount, reason=req.reason, reference=req.reference
        )
    return _balance(bal)


@router.subscriber(rpc("billing", "plans"), queue=QUEUE)
async def plans(req: PlansRequest, deps: BillingDeps) -> dict:
    return {"items": [plan.public() for plan in deps.settings.plans]}
