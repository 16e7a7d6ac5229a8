"""Wiring of the gallery worker; nothing connects at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from faststream.asgi import AsgiFastStream

from genimage_common.database import make_engine, make_sessionmaker, ping
from genimage_common.messaging import watch_dependencies
from genimage_common.outbox import OutboxRelay
from genimage_common.streams import ensure_streams
from genimage_common.worker import build_worker_app, worker_broker

from . import consumers, purge, rpc
from .deps import Deps
from .models import outbox
from .settings import GallerySettings

SERVICE = "gallery"


def create_app(settings: GallerySettings | None = None) -> AsgiFastStream:
    settings = settings or GallerySettings()
    broker = worker_broker(SERVICE, settings, consumers.router, rpc.router)
    engine = make_engine(settings.database_url)
    # A failure no rule classifies is transient while the database does not answer.
    watch_dependencies(broker, {"postgres": lambda: ping(engine)})

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        await consumers.ensure_consumers(js)
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, outbox, js, service=SERVICE)
        readers = make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
        deps = Deps(settings=settings, sessions=sessions, relay=relay, readers=readers)
        broker.context.set_global("deps", deps)
        relay.start()
        purger = asyncio.create_task(purge.purge_forever(deps), name="trash-purge")
        try:
            yield
        finally:
            purger.cancel()
            with suppress(asyncio.CancelledError):
                await purger
            await relay.stop()
            await engine.dispose()

    return build_worker_app(
        broker, title="genimage gallery", checks={"postgres": lambda: ping(engine)}, lifespan=lifespan
    )
