"""Credit packs that can be bought (``BILLING_PLANS``): what ``rpc.billing.plans`` lists and the
gateway's Stripe webhook turns into one ``purchase`` grant per Stripe event."""

from __future__ import annotations

from genimage_common.contracts.billing import Plan

__all__ = ["Plan", "check_unique", "default_plans"]


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
