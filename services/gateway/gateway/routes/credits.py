from __future__ import annotations

from fastapi import APIRouter

from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from ..deps import CurrentUser, ServicesDep
from ..schemas import Credits, LedgerEntry, Page
from .account import balance
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/credits", tags=["credits"])


@router.get("", response_model=Credits, responses=errors(401, 429, 503))
async def get_credits(user: CurrentUser, services: ServicesDep) -> Credits:
    """Your balance: `available` to spend and `reserved` by running generations."""
    return await balance(services, user.id)


@router.get("/ledger", response_model=Page[LedgerEntry], responses=errors(401, 422, 429, 503))
async def ledger(
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> dict:
    """Every movement of your credits, newest first."""
    return await rpc_call(
        services.broker,
        rpc("billing", "ledger"),
        {"user_id": str(user.id), "limit": limit, "cursor": cursor},
        timeout=services.settings.rpc_timeout_s,
    )
