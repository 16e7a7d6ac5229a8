"""What handlers need, created by the app's lifespan and reached through FastStream's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from faststream import Context

from genimage_common.database import SessionMaker
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing

from .settings import BillingSettings


@dataclass
class Deps:
    settings: BillingSettings
    pricing: Pricing
    sessions: SessionMaker
    relay: OutboxRelay | None = None


BillingDeps = Annotated[Deps, Context("deps")]
