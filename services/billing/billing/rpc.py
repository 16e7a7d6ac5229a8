"""Request/reply handlers (``rpc.billing.*``, queue group ``billing``): parse, call the ledger in
one unit of work, shape the reply. Requests and replies are the models of
``genimage_common.contracts.billing``; domain errors become ``{"error": {...}}`` replies."""

from __future__ import annotations

from datetime import timedelta

from faststream.nats import NatsRouter

from genimage_common.contracts.billing import (
    BALANCE,
    GRANT,
    LEDGER,
    PLANS,
    RELEASE,
    RESERVE,
    BalanceRequest,
    GrantRequest,
    HoldRecord,
    LedgerRequest,
    PlansReply,
    PlansRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
)
from genimage_common.contracts.records import Balance, LedgerLine, Page

from . import ledger, statement
from .deps import BillingDeps

router = NatsRouter()
QUEUE = "billing"
# Requests handled at once per replica (each holds a database connection while it runs).
WORKERS = 16

__all__ = ["LedgerRequest", "router"]


def _balance(bal: ledger.Balance) -> Balance:
    return Balance(available=bal.available, reserved=bal.held)


@router.subscriber(RESERVE.subject, queue=QUEUE, max_workers=WORKERS)
async def reserve(req: ReserveRequest, deps: BillingDeps) -> ReserveReply:
    async with deps.uow.transaction() as session:
        hold, bal = await ledger.reserve(
            session,
            user_id=req.user_id,
            generation_id=req.generation_id,
            amount=req.amount,
            units=req.units,
            ttl=timedelta(seconds=deps.settings.hold_ttl_s),
        )
    return ReserveReply(
        hold=HoldRecord.model_validate(hold, from_attributes=True),
        balance=_balance(bal),
    )


@router.subscriber(RELEASE.subject, queue=QUEUE, max_workers=WORKERS)
async def release(req: ReleaseRequest, deps: BillingDeps) -> ReleaseReply:
    """The gateway reserved credits but could not queue the generation: refund the hold now
    rather than when it expires. Idempotent; nothing happens to a hold already resolved."""
    async with deps.uow.transaction() as session:
        outcome, amount = await ledger.release(session, generation_id=req.generation_id, user_id=req.user_id)
        bal = await ledger.balance(session, user_id=req.user_id)
    released = outcome == ledger.Outcome.VOIDED
    return ReleaseReply(released=released, outcome=outcome.value, amount=amount, balance=_balance(bal))


@router.subscriber(BALANCE.subject, queue=QUEUE, max_workers=WORKERS)
async def balance(req: BalanceRequest, deps: BillingDeps) -> Balance:
    async with deps.uow.read() as session:
        return _balance(await ledger.balance(session, user_id=req.user_id))


@router.subscriber(LEDGER.subject, queue=QUEUE, max_workers=WORKERS)
async def ledger_entries(req: LedgerRequest, deps: BillingDeps) -> Page[LedgerLine]:
    async with deps.uow.read() as session:
        items, next_cursor = await statement.ledger_page(
            session, user_id=req.user_id, limit=req.limit, cursor=req.cursor
        )
    return Page[LedgerLine](items=items, next_cursor=next_cursor)


@router.subscriber(GRANT.subject, queue=QUEUE, max_workers=WORKERS)
async def grant(req: GrantRequest, deps: BillingDeps) -> Balance:
    async with deps.uow.transaction() as session:
        bal = await ledger.grant(
            session, user_id=req.user_id, amount=req.amount, reason=req.reason, reference=req.reference
        )
    return _balance(bal)


@router.subscriber(PLANS.subject, queue=QUEUE)
async def plans(req: PlansRequest, deps: BillingDeps) -> PlansReply:
    return PlansReply(items=list(deps.settings.plans))
