"""What handlers need, created by the app's lifespan and reached through FastStream's context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from faststream import Context

from genimage_common.database import SessionMaker
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.unit_of_work import UnitOfWork

from .settings import BillingSettings


@dataclass
class Deps:
    settings: BillingSettings
    pricing: Pricing
    sessions: SessionMaker
    relay: OutboxRelay | None = None
    # Every entry point's transaction: commits, then counts the credits moved and wakes the relay.
    uow: UnitOfWork = field(init=False)

    def __post_init__(self) -> None:
        self.uow = UnitOfWork(self.sessions, relay=self.relay)


BillingDeps = Annotated[Deps, Context("deps")]
