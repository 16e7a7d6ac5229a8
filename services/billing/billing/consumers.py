"""Event handlers: translate a message into one ledger call, in one transaction with the inbox."""

from __future__ import annotations

from faststream.nats import JStream, NatsRouter, PullSub

from genimage_common.database import claim_event
from genimage_common.events import (
    Event,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    UserRegistered,
)
from genimage_common.streams import GENERATION, IDENTITY
from genimage_common.subjects import any_user

from . import ledger
from .deps import BillingDeps
from .models import processed_events

router = NatsRouter()


def _durable(stream: str, name: str) -> dict:
    return {
        "stream": JStream(stream, declare=False),
        "durable": f"billing-{name}",
        "pull_sub": PullSub(batch_size=16, timeout=1.0),
    }


@router.subscriber(any_user(UserRegistered.name), **_durable(IDENTITY, "user-registered"))
async def on_user_registered(event: Event[UserRegistered], deps: BillingDeps) -> None:
    async with deps.sessions.begin() as session:
        if not await claim_event(session, processed_events, event_id=event.id, consumer="user-registered"):
            return
        await ledger.open_account(session, user_id=event.data.user_id, signup_grant=deps.pricing.signup_grant)
    deps.relay.wake()


@router.subscriber(any_user(GenerationCompleted.name), **_durable(GENERATION, "generation-completed"))
async def on_generation_completed(event: Event[GenerationCompleted], deps: BillingDeps) -> None:
    async with deps.sessions.begin() as session:
        if not await claim_event(session, processed_events, event_id=event.id, consumer="generation-completed"):
            return
        await ledger.commit(session, generation_id=event.data.generation_id, delivered=len(event.data.outputs))
    deps.relay.wake()


@router.subscriber(any_user(GenerationFailed.name), **_durable(GENERATION, "generation-failed"))
async def on_generation_failed(event: Event[GenerationFailed], deps: BillingDeps) -> None:
    async with deps.sessions.begin() as session:
        if not await claim_event(session, processed_events, event_id=event.id, consumer="generation-failed"):
            return
        await ledger.void(session, generation_id=event.data.generation_id, reason="failed")
    deps.relay.wake()


@router.subscriber(any_user(GenerationCanceled.name), **_durable(GENERATION, "generation-canceled"))
async def on_generation_canceled(event: Event[GenerationCanceled], deps: BillingDeps) -> None:
    async with deps.sessions.begin() as session:
        if not await claim_event(session, processed_events, event_id=event.id, consumer="generation-canceled"):
            return
        await ledger.void(session, generation_id=event.data.generation_id, reason="canceled")
    deps.relay.wake()
