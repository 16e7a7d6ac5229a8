"""``/v1/credits``: balance and ledger."""

from __future__ import annotations

from fastapi import APIRouter

from genimage_common.contracts.billing import BalanceRequest, LedgerRequest

from .. import presenters
from ..deps import CurrentUser, ServicesDep
from ..errors import checked_request
from ..schemas.common import Page
from ..schemas.credits import Credits, LedgerEntry
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/credits", tags=["credits"])


@router.get("", response_model=Credits, responses=errors(401, 429, 503))
async def get_credits(user: CurrentUser, services: ServicesDep) -> Credits:
    """Your balance: `available` to spend and `reserved` by running generations."""
    return presenters.credits(await services.billing.balance(BalanceRequest(user_id=user.id)))


@router.get("/ledger", response_model=Page[LedgerEntry], responses=errors(401, 422, 429, 503))
async def ledger(
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[LedgerEntry]:
    """Every movement of your credits, newest first."""
    with checked_request():
        query = LedgerRequest(user_id=user.id, limit=limit, cursor=cursor)
    page = await services.billing.ledger(query)
    return Page(items=[presenters.ledger_entry(line) for line in page.items], next_cursor=page.next_cursor)
