"""Credit purchases through Stripe Checkout: the webhook is verified (HMAC-SHA256 over
``<t>.<payload>``, timestamp within a tolerance) and a paid ``checkout.session.completed``
of a configured plan grants its credits exactly once, keyed by the Stripe event id.

The Checkout Session is created by whoever sells (the web app), with
``client_reference_id`` = the genimage user id and ``metadata.plan_id`` = a plan of
``GET /v1/billing/plans`` (or ``metadata.stripe_price_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.contracts.billing import GrantRequest, Plan

from . import repository as repo
from .deps import Services
from .errors import BadRequest, checked_request

log = logging.getLogger(__name__)

PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


def verify_signature(
    payload: bytes, header: str | None, *, secret: str, tolerance_s: int, now: float | None = None
) -> None:
    """Stripe's scheme: ``Stripe-Signature: t=<unix>,v1=<hex hmac>[,v1=...]``."""
    if not header:
        raise BadRequest("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadRequest("malformed Stripe-Signature header")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise BadRequest("invalid Stripe signature")
    # Checked after the signature, so an attacker cannot learn anything from it.
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise BadRequest("Stripe signature timestamp outside the tolerance")


async def plans(services: Services) -> list[Plan]:
    return (await services.billing.plans()).items


def _ignored(event_id: str, reason: str) -> dict[str, Any]:
    log.info("stripe event ignored", extra={"stripe_event_id": event_id, "reason": reason})
    return {"received": True, "granted": False, "reason": reason}


async def handle_event(services: Services, session: AsyncSession, event: dict[str, Any]) -> dict[str, Any]:
    """Grant the credits a paid Checkout Session bought; anything else is acknowledged and
    ignored (a non-2xx answer would only make Stripe retry). ``session``: to read the user."""
    event_id = str(event.get("id") or "")
    event_type = event.get("type")
    if not event_id or len(event_id) > 255:
        raise BadRequest("event without a valid id")
    if event_type not in PAID_EVENTS:
        return _ignored(event_id, "event type not handled")
    checkout = (event.get("data") or {}).get("object") or {}
    if not isinstance(checkout, dict):
        return _ignored(event_id, "no checkout session")
    if checkout.get("payment_status") not in ("paid", "no_payment_required"):
        return _ignored(event_id, "not paid yet")
    metadata = checkout.get("metadata") or {}
    try:
        user_id = uuid.UUID(str(checkout.get("client_reference_id") or metadata.get("user_id")))
    except ValueError:
        return _ignored(event_id, "no genimage user on the session")
    plan_id = metadata.get("plan_id")
    price_id = metadata.get("stripe_price_id") or metadata.get("price_id")
    plan = next(
        (
            p
            for p in await plans(services)
            if (plan_id and p.id == plan_id) or (price_id and p.stripe_price_id == price_id)
        ),
        None,
    )
    if plan is None:
        return _ignored(event_id, "not a configured plan")
    amount_total, currency = checkout.get("amount_total"), checkout.get("currency")
    if amount_total is not None and int(amount_total) != plan.price_cents:
        return _ignored(event_id, "amount paid differs from the plan's price")
    if currency and str(currency).lower() != plan.currency.lower():
        return _ignored(event_id, "currency differs from the plan's")
    if await repo.user_by_id(session, user_id) is None:
        return _ignored(event_id, "unknown user")
    with checked_request():
        grant = GrantRequest(user_id=user_id, amount=plan.credits, reason="purchase", reference=event_id)
    balance = await services.billing.grant(grant)
    log.info(
        "credits purchased",
        extra={"stripe_event_id": event_id, "user_id": str(user_id), "plan_id": plan.id, "credits": plan.credits},
    )
    return {"received": True, "granted": True, "credits": plan.credits, "balance": balance.model_dump()}
