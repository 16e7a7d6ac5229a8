"""Webhook signing secret and recorded deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .common import examples


class WebhookSecretOut(BaseModel):
    model_config = examples({"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})

    key: str = Field(description="Standard Webhooks signing secret of your webhooks (`whsec_...`)")


class WebhookDeliveryOut(BaseModel):
    model_config = examples(
        {
            "id": "5c3a9b1e-2d4f-5a6b-8c7d-9e0f1a2b3c4d",
            "generation_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b00",
            "event_type": "generation.completed",
            "url": "https://example.com/hooks/genimage",
            "status": "delivered",
            "attempts": 2,
            "last_status_code": 200,
            "last_error": None,
            "next_attempt_at": None,
            "created_at": "2026-11-22T10:00:03Z",
            "delivered_at": "2026-11-22T10:00:09Z",
        }
    )

    id: uuid.UUID = Field(description="The `webhook-id` header: the same on every attempt")
    generation_id: uuid.UUID
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="When pending: the next attempt")
    created_at: datetime
    delivered_at: datetime | None = None
