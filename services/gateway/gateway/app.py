"""Wiring of the gateway: the lifespan connects NATS, PostgreSQL and S3; nothing connects at import."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from genimage_common.catalog import load_catalog
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.logging import configure_logging
from genimage_common.messaging import make_broker
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams
from genimage_common.telemetry import build_info, configure_tracing

from . import problems
from .deps import Services
from .models import outbox
from .routes import (
    account,
    admin,
    auth,
    billing,
    boards,
    credits,
    events,
    feed,
    generations,
    health,
    images,
    stats,
    uploads,
)
from .settings import GatewaySettings

SERVICE = "gateway"

HTTP_REQUESTS = Counter("genimage_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_DURATION = Histogram("genimage_http_request_duration_seconds", "HTTP request duration", ["method", "route"])


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    build_info(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        broker = make_broker(settings.nats_url, service=SERVICE)
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        store = ObjectStore(settings)
        await store.ensure_bucket()
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, outbox, js, service=SERVICE)
        relay.start()
        app.state.services = Services(
            settings=settings,
            sessions=sessions,
            broker=broker,
            store=store,
            relay=relay,
            pricing=Pricing(),
            catalog=load_catalog(Path(settings.models_file)),
        )
        try:
            yield
        finally:
            await relay.stop()
            await broker.stop()
            await engine.dispose()

    app = FastAPI(
        title="genimage API",
        version="1.0.0",
        description="Generate images and videos from prompts; keep them in a gallery. "
        "Errors are RFC 9457 problem+json with a stable `code`.",
        lifespan=lifespan,
    )
    problems.install(app)
    routers = (auth, account, uploads, generations, events, images, boards, feed, stats, credits, billing, admin)
    for module in (*routers, health):
        app.include_router(module.router)

    @app.middleware("http")
    async def red_metrics(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    return app
