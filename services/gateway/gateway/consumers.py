"""What the gateway consumes: generation events, to give back in-flight slots (terminal
events) and to record webhook deliveries. Durable pull consumers shared by the replicas."""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Context
from faststream.nats import JStream, NatsRouter, PullSub
from nats.js.api import DeliverPolicy

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

from . import webhooks
from .deps import Services

ServicesCtx = Annotated[Services, Context("services")]


async def _handle(event: Event[Any], services: Services, *, terminal: bool) -> None:
    if terminal:
        await services.inflight.release(str(event.data.user_id), str(event.data.generation_id))
    async with services.sessions.begin() as session:
        recorded = await webhooks.enqueue(session, event, base_url=services.settings.public_url.rstrip("/"))
    if recorded and services.webhook_sender is not None:
        services.webhook_sender.wake()


async def on_started(event: Event[GenerationStarted], services: ServicesCtx) -> None:
    await _handle(event, services, terminal=False)


async def on_progress(event: Event[GenerationProgress], services: ServicesCtx) -> None:
    await _handle(event, services, terminal=False)


async def on_completed(event: Event[GenerationCompleted], services: ServicesCtx) -> None:
    await _handle(event, services, terminal=True)


async def on_failed(event: Event[GenerationFailed], services: ServicesCtx) -> None:
    await _handle(event, services, terminal=True)


async def on_canceled(event: Event[GenerationCanceled], services: ServicesCtx) -> None:
    await _handle(event, services, terminal=True)


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
        )(handler)
    return router
