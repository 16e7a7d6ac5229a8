"""One durable consumer per stream feeds the projection: each event in one transaction with its
inbox record, under the shared writer lock (see ``projection.writer_lock``)."""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsRouter
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from genimage_common.database import claim_event
from genimage_common.events import UnknownEventType, parse_event, utcnow
from genimage_common.messaging import durable
from genimage_common.streams import BILLING, GALLERY, GENERATION, IDENTITY
from genimage_common.subjects import BILLING_ALL, GALLERY_ALL, GENERATION_ALL, IDENTITY_ALL

from . import projection
from .deps import GalleryDeps
from .models import processed_events

log = logging.getLogger(__name__)
router = NatsRouter()

LAG = Gauge(
    "genimage_projection_lag_seconds",
    "Seconds from an event's time to its projection into the gallery read model (last event applied)",
    ["stream"],
)

# (stream, durable consumer, filter subject)
CONSUMERS = (
    (GENERATION, projection.INBOX[GENERATION], GENERATION_ALL),
    (BILLING, projection.INBOX[BILLING], BILLING_ALL),
    (IDENTITY, projection.INBOX[IDENTITY], IDENTITY_ALL),
    (GALLERY, projection.INBOX[GALLERY], GALLERY_ALL),
)


async def ensure_consumers(js: JetStreamContext, consumers: tuple[tuple[str, str, str], ...] = CONSUMERS) -> None:
    """Bring existing durables to this release's filter subject (a durable created by an older
    release keeps its old filter otherwise: binding to it never updates it)."""
    for stream, name, subject in consumers:
        try:
            info = await js.consumer_info(stream, name)
        except NotFoundError:
            continue  # the subscriber creates it
        if info.config.filter_subject != subject:
            config = info.config
            config.filter_subject = subject
            await js.add_consumer(stream, config=config)
            log.info("consumer filter updated", extra={"consumer": name, "filter": subject})


async def project(body: dict[str, Any], deps: GalleryDeps, stream: str) -> None:
    try:
        event = parse_event(body)
    except UnknownEventType:
        return  # a newer producer's event type: nothing to project yet
    if not projection.projects(event):
        return
    async with deps.uow.transaction() as session:
        await projection.writer_lock(session)
        if await claim_event(session, processed_events, event_id=event.id, consumer=projection.INBOX[stream]):
            await projection.apply(session, event)
    LAG.labels(stream=stream).set(max((utcnow() - event.time).total_seconds(), 0.0))


def _durable(stream: str) -> dict[str, Any]:
    return durable(stream, projection.INBOX[stream], batch=32)


@router.subscriber(GENERATION_ALL, **_durable(GENERATION))
async def on_generation_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await project(body, deps, GENERATION)


@router.subscriber(BILLING_ALL, **_durable(BILLING))
async def on_billing_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await project(body, deps, BILLING)


@router.subscriber(IDENTITY_ALL, **_durable(IDENTITY))
async def on_identity_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await project(body, deps, IDENTITY)


@router.subscriber(GALLERY_ALL, **_durable(GALLERY))
async def on_gallery_event(body: dict[str, Any], deps: GalleryDeps) -> None:
    await project(body, deps, GALLERY)
