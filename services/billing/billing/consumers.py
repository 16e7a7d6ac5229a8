"""Event handlers: translate a message into one ledger call, in one transaction with the inbox."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.nats import NatsRouter
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.database import claim_event
from genimage_common.events import (
    Event,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    UserRegistered,
)
from genimage_common.messaging import durable
from genimage_common.streams import GENERATION, IDENTITY
from genimage_common.subjects import any_user

from . import ledger
from .deps import BillingDeps, Deps
from .models import processed_events

log = logging.getLogger(__name__)

router = NatsRouter()


def _durable(stream: str, name: str) -> dict[str, Any]:
    return durable(stream, f"billing-{name}")


async def _claim(session: AsyncSession, event: Event, consumer: str) -> bool:
    """Record the event id in the inbox; False for a redelivery (then nothing is done again)."""
    return await claim_event(session, processed_events, event_id=event.id, consumer=consumer)


def _report(outcome: ledger.Outcome, event: Event, generation_id: uuid.UUID) -> None:
    if outcome in (ledger.Outcome.ALREADY_RESOLVED, ledger.Outcome.NO_HOLD, ledger.Outcome.NOTHING_DUE):
        log.info(
            "terminal event changed nothing",
            extra={"outcome": outcome.value, "event_type": event.type, "generation_id": str(generation_id)},
        )


# What each subscriber does, as plain functions (the subscribers below only bind them to streams).


async def apply_user_registered(deps: Deps, event: Event[UserRegistered]) -> None:
    async with deps.uow.transaction() as session:
        if not await _claim(session, event, "user-registered"):
            return
        await ledger.open_account(session, user_id=event.data.user_id, signup_grant=deps.pricing.signup_grant)


async def apply_completed(deps: Deps, event: Event[GenerationCompleted]) -> ledger.Outcome | None:
    """Commit the delivered share; None when this event id was applied before."""
    async with deps.uow.transaction() as session:
        if not await _claim(session, event, "generation-completed"):
            return None
        outcome = await ledger.commit(
            session, generation_id=event.data.generation_id, delivered=len(event.data.outputs)
        )
    _report(outcome, event, event.data.generation_id)
    return outcome


async def apply_voiding(
    deps: Deps, event: Event[GenerationFailed] | Event[GenerationCanceled], *, reason: ledger.VoidReason
) -> ledger.Outcome | None:
    """Refund the hold of a failed or canceled generation; None when this event id was applied before."""
    async with deps.uow.transaction() as session:
        if not await _claim(session, event, f"generation-{reason}"):
            return None
        outcome = await ledger.void(session, generation_id=event.data.generation_id, reason=reason)
    _report(outcome, event, event.data.generation_id)
    return outcome


@router.subscriber(any_user(UserRegistered.name), **_durable(IDENTITY, "user-registered"))
async def on_user_registered(event: Event[UserRegistered], deps: BillingDeps) -> None:
    await apply_user_registered(deps, event)


@router.subscriber(any_user(GenerationCompleted.name), **_durable(GENERATION, "generation-completed"))
async def on_generation_completed(event: Event[GenerationCompleted], deps: BillingDeps) -> None:
    await apply_completed(deps, event)


@router.subscriber(any_user(GenerationFailed.name), **_durable(GENERATION, "generation-failed"))
async def on_generation_failed(event: Event[GenerationFailed], deps: BillingDeps) -> None:
    await apply_voiding(deps, event, reason="failed")


@router.subscriber(any_user(GenerationCanceled.name), **_durable(GENERATION, "generation-canceled"))
async def on_generation_canceled(event: Event[GenerationCanceled], deps: BillingDeps) -> None:
    await apply_voiding(deps, event, reason="canceled")
