"""One durable consumer per stream feeds the projection, in stream order."""

from __future__ import annotations

from typing import Any

from faststream.nats import JStream, NatsRouter, PullSub

from genimage_common.database import claim_event
from genimage_common.events import UnknownEventType, parse_event
from genimage_common.streams import BILLING, GENERATION

from . import projection
from .deps import GalleryDeps
from .models import processed_events

router = NatsRouter()


async def _project(body: dict[str, Any], deps: GalleryDeps, consumer: str) -> None:
    try:
        event = parse_event(body)
    except UnknownEventType:
        return  # a newer producer's event type: nothing to project yet
    async with deps.sessions.begin() as session:
        if not await claim_event(session, processed_events, event_id=event.id, consumer=consumer):
            return
        await projection.apply(session, event)


@router.subscriber(
    "generation.>",
    stream=JStream(GENERATION, declare=False),
    durable="gallery-generation",
    pull_sub=PullSub(batch_size=32, timeout=1.0),
)
async def on_generation_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await _project(body, deps, "gallery-generation")


@router.subscriber(
    "billing.credits_committed.*",
    stream=JStream(BILLING, declare=False),
    durable="gallery-billing",
    pull_sub=PullSub(batch_size=32, timeout=1.0),
)
async def on_billing_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await _project(body, deps, "gallery-billing")
