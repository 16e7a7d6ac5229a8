"""Billing configuration: hold TTL and credit packs (``BILLING_PLANS``) are validated at start."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from billing.plans import default_plans
from billing.settings import BillingSettings


def test_defaults_hold_for_15_minutes_and_sell_three_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_PLANS", raising=False)
    monkeypatch.delenv("BILLING_HOLD_TTL_S", raising=False)
    settings = BillingSettings()
    assert settings.hold_ttl_s == 900
    assert settings.plans == default_plans()
    assert [p.id for p in settings.plans] == ["starter", "creator", "studio"]


def test_plans_are_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = {"id": "pro", "name": "Pro", "credits": 300, "price_cents": 1200, "stripe_price_id": "price_9"}
    monkeypatch.setenv("BILLING_PLANS", json.dumps([plan]))
    monkeypatch.setenv("BILLING_HOLD_TTL_S", "60")
    settings = BillingSettings()
    assert [p.public() for p in settings.plans] == [{**plan, "currency": "usd"}]
    assert settings.hold_ttl_s == 60


@pytest.mark.parametrize(
    "plans",
    [
        [
            {"id": "a", "name": "A", "credits": 1, "price_cents": 1},
            {"id": "a", "name": "B", "credits": 2, "price_cents": 2},
        ],
        [{"id": "a", "name": "A", "credits": 0, "price_cents": 1}],
        [{"id": "a", "name": "A", "credits": 1, "price_cents": 1, "currency": "EURO"}],
        [{"id": "Bad Id", "name": "A", "credits": 1, "price_cents": 1}],
        [{"id": "a", "name": "A", "credits": 1, "price_cents": 1, "surprise": True}],
        [
            {"id": "a", "name": "A", "credits": 1, "price_cents": 1, "stripe_price_id": "price_1"},
            {"id": "b", "name": "B", "credits": 2, "price_cents": 2, "stripe_price_id": "price_1"},
        ],
    ],
)
def test_invalid_plans_are_refused(monkeypatch: pytest.MonkeyPatch, plans: list[dict]) -> None:
    monkeypatch.setenv("BILLING_PLANS", json.dumps(plans))
    with pytest.raises(ValidationError):
        BillingSettings()


def test_a_hold_ttl_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_HOLD_TTL_S", "0")
    with pytest.raises(ValidationError):
        BillingSettings()
