"""What the gateway consumes: generation events, to give back in-flight slots (terminal
events) and to record webhook deliveries. Durable pull consumers shared by the replicas,
typed with the event models (their payload schemas are in the gateway's AsyncAPI document)."""

from __future__ import annotations

from typing import Annotated

from faststream import Context
from faststream.nats import JStream, NatsRouter, PullSub
from nats.js.api import DeliverPolicy

from genimage_common.contracts.status import TERMINAL_EVENTS
from genimage_common.events import (
    Event,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationStarted,
)
from genimage_common.streams import GENERATION
from genimage_common.subjects import any_user
from genimage_common.unit_of_work import on_commit

from . import webhooks
from .deps import Services
from .presenters import Links

ServicesCtx = Annotated[Services, Context("services")]

GenerationEvent = (
    Event[GenerationStarted]
    | Event[GenerationProgress]
    | Event[GenerationCompleted]
    | Event[GenerationFailed]
    | Event[GenerationCanceled]
)


async def _handle(event: GenerationEvent, services: Services) -> None:
    if event.data.name in TERMINAL_EVENTS:
        await services.inflight.release(str(event.data.user_id), str(event.data.generation_id))
    async with services.uow.transaction() as session:
        recorded = await webhooks.enqueue(session, event, links=Links.configured(services.settings))
        if recorded and services.webhook_sender is not None:
            on_commit(session, services.webhook_sender.wake)


async def on_started(event: Event[GenerationStarted], services: ServicesCtx) -> None:
    await _handle(event, services)


async def on_progress(event: Event[GenerationProgress], services: ServicesCtx) -> None:
    await _handle(event, services)


async def on_completed(event: Event[GenerationCompleted], services: ServicesCtx) -> None:
    await _handle(event, services)


async def on_failed(event: Event[GenerationFailed], services: ServicesCtx) -> None:
    await _handle(event, services)


async def on_canceled(event: Event[GenerationCanceled], services: ServicesCtx) -> None:
    await _handle(event, services)


_DESCRIPTION = "`{name}` of every user:{slot} records the webhook deliveries it calls for"
_FREES_SLOT = " frees the generation's in-flight slot;"


def build_router() -> NatsRouter:
    router = NatsRouter()
    for data, handler in (
        (GenerationStarted, on_started),
        (GenerationProgress, on_progress),
        (GenerationCompleted, on_completed),
        (GenerationFailed, on_failed),
        (GenerationCanceled, on_canceled),
    ):
        router.subscriber(
            any_user(data.name),
            stream=JStream(GENERATION, declare=False),
            durable=f"gateway-{data.name.replace('.', '-')}",
            # A new gateway does not replay the history: only what happens from now on.
            deliver_policy=DeliverPolicy.NEW,
            pull_sub=PullSub(batch_size=16, timeout=1.0),
            title=f"gateway:{data.name}",
            description=f"`{data.name}` of every user: "
            + (
                "frees the in-flight slot, records webhook deliveries"
                if data.name in TERMINAL_EVENTS
                else "records webhook deliveries"
            ),
        )(handler)
    return router
