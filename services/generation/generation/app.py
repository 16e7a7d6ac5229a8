"""Wiring of the generation worker; nothing connects at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.asgi import AsgiFastStream

from genimage_common.catalog import load_catalog
from genimage_common.logging import configure_logging
from genimage_common.messaging import make_broker
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams
from genimage_common.telemetry import build_info, configure_tracing
from genimage_common.worker import build_worker_app

from . import consumers
from .jobs import JobContext
from .providers.base import Provider
from .providers.local import LocalProvider
from .settings import GenerationSettings

SERVICE = "generation"


def create_app(settings: GenerationSettings | None = None) -> AsgiFastStream:
    settings = settings or GenerationSettings()
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    build_info(SERVICE)
    broker = make_broker(settings.nats_url, service=SERVICE)
    broker.include_router(consumers.build_router(concurrency=settings.concurrency))
    store = ObjectStore(settings)
    catalog = load_catalog(settings.models_file)
    providers: dict[str, Provider] = {"local": LocalProvider()}

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await broker.connect()
        await ensure_streams(broker.connection.jetstream(), settings)
        await store.ensure_bucket()
        broker.context.set_global(
            "jobs",
            JobContext(
                broker=broker,
                store=store,
                catalog=catalog,
                providers=providers,
                progress_interval_s=settings.progress_interval_s,
            ),
        )
        yield

    return build_worker_app(broker, title="genimage generation", checks={"s3": store.ping}, lifespan=lifespan)
