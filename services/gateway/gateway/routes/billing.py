"""``/v1/billing``: credit packs and Stripe purchases."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Request

from genimage_common.errors import ServiceUnavailable

from .. import presenters, purchases
from ..deps import ReaderDep, ServicesDep
from ..errors import BadRequest
from ..schemas.billing import PlansOut, StripeWebhookResult
from .responses import errors

router = APIRouter(prefix="/v1/billing", tags=["billing"])


@router.get("/plans", response_model=PlansOut, responses=errors(429, 503))
async def list_plans(services: ServicesDep) -> PlansOut:
    """The credit packs on sale (no authentication needed)."""
    return PlansOut(items=[presenters.plan(p) for p in await purchases.plans(services)])


@router.post(
    "/webhooks/stripe",
    response_model=StripeWebhookResult,
    responses=errors(400, 409, 413, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)",
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "example": {
                        "id": "evt_1PXYZ",
                        "type": "checkout.session.completed",
                        "data": {
                            "object": {
                                "object": "checkout.session",
                                "client_reference_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b02",
                                "payment_status": "paid",
                                "amount_total": 500,
                                "currency": "usd",
                                "metadata": {"plan_id": "starter"},
                            }
                        },
                    },
                }
            },
        }
    },
)
async def stripe_webhook(
    request: Request,
    services: ServicesDep,
    session: ReaderDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature", max_length=2000)] = None,
) -> dict:
    """Stripe calls this. The `Stripe-Signature` is verified (with a timestamp tolerance);
    a paid `checkout.session.completed` of a configured plan grants its credits exactly
    once per Stripe event id. Other events are acknowledged and ignored."""
    secret = services.settings.stripe_webhook_secret
    if not secret:
        raise ServiceUnavailable("Stripe webhooks are not configured")
    payload = await request.body()
    purchases.verify_signature(
        payload, stripe_signature, secret=secret, tolerance_s=services.settings.stripe_tolerance_s
    )
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise BadRequest("the payload is not JSON") from exc
    if not isinstance(event, dict):
        raise BadRequest("the payload is not a Stripe event")
    return await purchases.handle_event(services, session, event)
