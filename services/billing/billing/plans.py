"""Credit packs that can be bought (``BILLING_PLANS``): what ``rpc.billing.plans`` lists and the
gateway's Stripe webhook turns into one ``purchase`` grant per Stripe event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    name: str = Field(min_length=1, max_length=80)
    credits: int = Field(gt=0, le=10_000_000)
    price_cents: int = Field(ge=0, le=100_000_000)
    currency: str = Field("usd", pattern=r"^[a-z]{3}$")
    # The Stripe Price of this pack (``price_...``), when it is sold through Stripe Checkout.
    stripe_price_id: str | None = Field(None, min_length=1, max_length=255)

    def public(self) -> dict[str, Any]:
        return self.model_dump()


def default_plans() -> list[Plan]:
    return [
        Plan(id="starter", name="Starter", credits=100, price_cents=500),
        Plan(id="creator", name="Creator", credits=500, price_cents=2000),
        Plan(id="studio", name="Studio", credits=2000, price_cents=6000),
    ]


def check_unique(plans: list[Plan]) -> list[Plan]:
    ids = [p.id for p in plans]
    if len(set(ids)) != len(ids):
        raise ValueError("plan ids must be unique")
    prices = [p.stripe_price_id for p in plans if p.stripe_price_id]
    if len(set(prices)) != len(prices):
        raise ValueError("a Stripe price may belong to one plan only")
    return plans
