"""``rpc.billing.*``: the requests billing answers and what it answers (queue group ``billing``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from .records import Balance, LedgerLine, Page, Record
from .rpc import Request, Rpc

SERVICE = "billing"
# Far above any real price or pack, far below what a BIGINT sum of many of them could overflow.
MAX_AMOUNT = 1_000_000_000
MAX_ENTRY_ID = 2**63 - 1

GrantReason = Literal["purchase", "admin", "promo"]


# --- requests -----------------------------------------------------------------------------


class ReserveRequest(Request):
    generation_id: uuid.UUID
    user_id: uuid.UUID
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    units: int = Field(1, ge=1, le=1000)


class ReleaseRequest(Request):
    generation_id: uuid.UUID
    user_id: uuid.UUID


class BalanceRequest(Request):
    user_id: uuid.UUID


class LedgerRequest(Request):
    user_id: uuid.UUID
    limit: int = Field(20, ge=1, le=100)
    # The id of the last entry of the previous page: ASCII digits within a BIGINT. Checked
    # here, where a bad value becomes a validation reply; past this point a value such as "²"
    # ("²".isdigit() is true, int("²") raises) would crash the handler, which never replies.
    cursor: str | None = Field(None, min_length=1, max_length=19, pattern=r"^[0-9]+$")

    @field_validator("cursor")
    @classmethod
    def _within_bigint(cls, value: str | None) -> str | None:
        if value is not None and int(value) > MAX_ENTRY_ID:
            raise ValueError("not a cursor of this list")
        return value


class GrantRequest(Request):
    user_id: uuid.UUID
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    reason: GrantReason
    reference: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")


class PlansRequest(Request):
    pass


# --- replies ------------------------------------------------------------------------------

# The hold's expiry as billing has always written it (``isoformat()``, ``+00:00``).
IsoTime = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")]


class HoldRecord(Record):
    generation_id: uuid.UUID
    amount: int
    units: int
    status: Literal["pending", "committed", "voided", "expired"]
    expires_at: IsoTime


class ReserveReply(Record):
    hold: HoldRecord
    balance: Balance


class ReleaseReply(Record):
    released: bool = Field(description="Whether this call gave the credits back")
    outcome: str = Field(description="What happened to the hold (voided, already_resolved, no_hold)")
    amount: int = Field(description="Credits given back by this call")
    balance: Balance


class Plan(BaseModel):
    """A credit pack for sale (``BILLING_PLANS``), as ``rpc.billing.plans`` lists it."""

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


class PlansReply(Record):
    items: list[Plan]


# --- calls --------------------------------------------------------------------------------

RESERVE = Rpc[ReserveRequest, ReserveReply](SERVICE, "reserve", ReserveRequest, ReserveReply)
RELEASE = Rpc[ReleaseRequest, ReleaseReply](SERVICE, "release", ReleaseRequest, ReleaseReply)
BALANCE = Rpc[BalanceRequest, Balance](SERVICE, "balance", BalanceRequest, Balance)
LEDGER = Rpc[LedgerRequest, Page[LedgerLine]](SERVICE, "ledger", LedgerRequest, Page[LedgerLine])
GRANT = Rpc[GrantRequest, Balance](SERVICE, "grant", GrantRequest, Balance)
PLANS = Rpc[PlansRequest, PlansReply](SERVICE, "plans", PlansRequest, PlansReply)
