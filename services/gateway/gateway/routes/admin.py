"""``/v1/admin``: operations for admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header

from genimage_common.contracts.billing import GrantRequest
from genimage_common.errors import NotFound
from genimage_common.ids import derived_id, new_id

from .. import repository
from ..deps import AdminUser, ReaderDep, ServicesDep
from ..idempotency import KEY_PATTERN
from ..schemas.billing import AdminCreditGrant, AdminCreditsOut
from .responses import errors

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/users/{user_id}/credits",
    response_model=AdminCreditsOut,
    responses=errors(401, 403, 404, 409, 422, 429, 503),
)
async def grant_credits(
    user_id: uuid.UUID,
    body: AdminCreditGrant,
    admin: AdminUser,
    services: ServicesDep,
    session: ReaderDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=KEY_PATTERN,
            description="Retries with the same key grant once; the same key with another amount is `409`",
        ),
    ] = None,
) -> AdminCreditsOut:
    """Grant credits to a user (admins only)."""
    if await repository.user_by_id(session, user_id) is None:
        raise NotFound("user not found")
    # The ledger grants once per (reason, reference): the reference is scoped to this admin
    # and target, so two admins' keys never collide.
    reference = str(derived_id("admin-grant", admin.id, user_id, idempotency_key)) if idempotency_key else str(new_id())
    balance = await services.billing.grant(
        GrantRequest(user_id=user_id, amount=body.amount, reason="admin", reference=reference)
    )
    return AdminCreditsOut(user_id=user_id, reference=reference, available=balance.available, reserved=balance.reserved)
