"""Wiring: the lifespan creates engine, relay and sweeper; nothing connects at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from faststream.asgi import AsgiFastStream

from genimage_common.database import make_engine, make_sessionmaker, ping
from genimage_common.messaging import watch_dependencies
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.streams import ensure_streams
from genimage_common.worker import build_worker_app, worker_broker

from . import consumers, rpc
from .deps import Deps
from .models import outbox
from .settings import BillingSettings
from .sweeper import sweep_forever

SERVICE = "billing"


def create_app(settings: BillingSettings | None = None) -> AsgiFastStream:
    settings = settings or BillingSettings()
    broker = worker_broker(SERVICE, settings, consumers.router, rpc.router)
    # RPC workers, consumers, relay and sweeper each hold a connection while they work.
    engine = make_engine(settings.database_url, pool_size=rpc.WORKERS + 4)
    # A failure no rule classifies is transient while the database does not answer.
    watch_dependencies(broker, {"postgres": lambda: ping(engine)})

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, outbox, js, service=SERVICE)
        deps = Deps(settings=settings, pricing=Pricing(), sessions=sessions, relay=relay)
        broker.context.set_global("deps", deps)
        relay.start()
        sweeper = asyncio.create_task(sweep_forever(deps), name="hold-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await relay.stop()
            await engine.dispose()

    return build_worker_app(
        broker, title="genimage billing", checks={"postgres": lambda: ping(engine)}, lifespan=lifespan
    )
