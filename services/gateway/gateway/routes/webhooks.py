from __future__ import annotations

from fastapi import APIRouter

from .. import webhooks
from ..deps import CurrentUser, ServicesDep
from ..schemas.webhooks import WebhookSecretOut
from .responses import errors

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.get("/secret", response_model=WebhookSecretOut, responses=errors(401, 429))
async def webhook_secret(user: CurrentUser, services: ServicesDep) -> WebhookSecretOut:
    """The secret your webhooks are signed with (Standard Webhooks: headers `webhook-id`,
    `webhook-timestamp`, `webhook-signature`). Verify with any Standard Webhooks library."""
    return WebhookSecretOut(key=webhooks.signing_secret(services.settings, user.id))
