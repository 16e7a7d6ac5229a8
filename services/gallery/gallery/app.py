"""Wiring of the gallery worker; nothing connects at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.asgi import AsgiFastStream

from genimage_common.database import make_engine, make_sessionmaker, ping
from genimage_common.logging import configure_logging
from genimage_common.messaging import make_broker
from genimage_common.outbox import OutboxRelay
from genimage_common.streams import ensure_streams
from genimage_common.telemetry import build_info, configure_tracing
from genimage_common.worker import build_worker_app

from . import consumers, rpc
from .deps import Deps
from .models import outbox
from .settings import GallerySettings

SERVICE = "gallery"


def create_app(settings: GallerySettings | None = None) -> AsgiFastStream:
    settings = settings or GallerySettings()
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    build_info(SERVICE)
    broker = make_broker(settings.nats_url, service=SERVICE)
    broker.include_router(consumers.router)
    broker.include_router(rpc.router)
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, outbox, js, service=SERVICE)
        broker.context.set_global("deps", Deps(settings=settings, sessions=sessions, relay=relay))
        relay.start()
        try:
            yield
        finally:
            await relay.stop()
            await engine.dispose()

    return build_worker_app(
        broker, title="genimage gallery", checks={"postgres": lambda: ping(engine)}, lifespan=lifespan
    )
