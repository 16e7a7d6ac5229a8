"""Credit packs, Stripe purchases and admin grants."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from .common import Strict, examples
from .credits import Credits


class Plan(BaseModel):
    model_config = examples(
        {
            "id": "starter",
            "name": "Starter",
            "credits": 100,
            "price_cents": 500,
            "currency": "usd",
            "stripe_price_id": "price_1PStarter",
        }
    )

    id: str
    name: str
    credits: int
    price_cents: int
    currency: str
    stripe_price_id: str | None = None


class PlansOut(BaseModel):
    items: list[Plan]


class StripeWebhookResult(BaseModel):
    model_config = examples(
        {"received": True, "granted": True, "credits": 100, "balance": {"available": 120, "reserved": 0}}
    )

    received: bool = True
    granted: bool = Field(description="Whether this event granted credits (false: acknowledged and ignored)")
    reason: str | None = Field(None, description="Why it was ignored")
    credits: int | None = None
    balance: Credits | None = None


class AdminCreditGrant(Strict):
    model_config = examples({"amount": 100}, extra="forbid")

    amount: int = Field(ge=1, le=1_000_000, description="Credits to add")


class AdminCreditsOut(BaseModel):
    model_config = examples(
        {
            "user_id": "0192f0c4-7a2e-7c4b-9a43-5d7f3c2a1b02",
            "reference": "6f1c1f0e-3a57-5d52-9a55-2f8b7c0e9a11",
            "available": 120,
            "reserved": 0,
        }
    )

    user_id: uuid.UUID
    reference: str = Field(description="The grant's key in the ledger (derived from `Idempotency-Key`)")
    available: int
    reserved: int
