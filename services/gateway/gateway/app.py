"""Wiring of the gateway: the lifespan connects NATS, PostgreSQL and S3; nothing connects at import."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genimage_common.catalog import load_catalog
from genimage_common.contracts.clients import BillingClient, GalleryClient
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.logging import configure_logging
from genimage_common.messaging import make_broker
from genimage_common.outbox import OutboxRelay
from genimage_common.pricing import Pricing
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams
from genimage_common.telemetry import build_info, configure_tracing, instrument_fastapi
from genimage_common.unit_of_work import UnitOfWork

from . import asyncapi, consumers, idempotency, openapi, problems, repository
from .deps import Services
from .gatekeeper import Gatekeeper
from .models import outbox
from .oidc import OidcVerifier
from .ratelimit import InflightSlots, RateLimiter
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
    webhooks,
)
from .settings import GatewaySettings
from .uploads import UploadService
from .webhooks import WebhookSender

SERVICE = "gateway"
PURGE_INTERVAL_S = 600

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("genimage_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_DURATION = Histogram("genimage_http_request_duration_seconds", "HTTP request duration", ["method", "route"])

TAGS = [
    {"name": "auth", "description": "Accounts and tokens: signup, login, rotating refresh tokens, logout"},
    {"name": "account", "description": "You, your credits and your API keys"},
    {"name": "uploads", "description": "Input images for image-to-image and image-to-video"},
    {"name": "generations", "description": "Queue, follow (`Prefer: wait`, SSE, webhooks) and cancel generations"},
    {"name": "events", "description": "Server-Sent Events, resumable with `Last-Event-ID`"},
    {"name": "webhooks", "description": "Standard Webhooks signing secret"},
    {"name": "images", "description": "Your gallery"},
    {"name": "boards", "description": "Collections of images"},
    {"name": "feed", "description": "The public community feed"},
    {"name": "stats", "description": "Your totals"},
    {"name": "credits", "description": "Balance and ledger"},
    {"name": "billing", "description": "Credit packs and Stripe purchases"},
    {"name": "admin", "description": "Operations for admins"},
    {"name": "operations", "description": "Health and readiness probes"},
]


class RedMetrics:
    """Rate, errors, duration per route template (pure ASGI: streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_DURATION.labels(scope["method"], path).observe(time.perf_counter() - start)


async def _purge_forever(services: Services) -> None:
    while True:
        try:
            async with services.uow.transaction() as session:
                await repository.purge_idempotency_keys(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("idempotency purge failed")
        await asyncio.sleep(PURGE_INTERVAL_S)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    build_info(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        broker = make_broker(settings.nats_url, service=SERVICE)
        if settings.background_workers:
            broker.include_router(consumers.build_router())
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        store = ObjectStore(settings)
        await store.ensure_bucket()
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, outbox, js, service=SERVICE)
        http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        services = Services(
            settings=settings,
            sessions=sessions,
            uow=UnitOfWork(sessions, relay=relay),
            broker=broker,
            billing=BillingClient(broker, timeout=settings.rpc_timeout_s),
            gallery=GalleryClient(broker, timeout=settings.rpc_timeout_s),
            store=store,
            pricing=Pricing(),
            catalog=load_catalog(Path(settings.models_file)),
            limiter=await RateLimiter.open(js, settings.ratelimit_bucket, replicas=settings.stream_replicas),
            inflight=await InflightSlots.open(
                js, settings.inflight_bucket, ttl_s=settings.inflight_ttl_s, replicas=settings.stream_replicas
            ),
            uploads=UploadService(
                store,
                max_bytes=settings.upload_max_bytes,
                max_pixels=settings.upload_max_pixels,
                max_decoded_bytes=min(settings.upload_max_decoded_bytes, settings.upload_memory_budget_bytes),
                memory_budget_bytes=settings.upload_memory_budget_bytes,
                memory_wait_s=settings.upload_memory_wait_s,
                concurrency=settings.upload_concurrency,
            ),
            oidc=OidcVerifier(settings, http) if settings.oidc_issuer else None,
            webhook_sender=WebhookSender(settings, sessions) if settings.background_workers else None,
        )
        app.state.services = services
        broker.context.set_global("services", services)
        relay.start()
        # Outcomes of idempotent requests this replica could not store while the database was
        # away: its own, so it runs whatever GATEWAY_BACKGROUND_WORKERS says.
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(idempotency.settle_forever(services), name="idempotency-settle")
        ]
        if services.webhook_sender is not None:
            services.webhook_sender.start()
            tasks.append(asyncio.create_task(_purge_forever(services), name="idempotency-purge"))
        await broker.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            if services.webhook_sender is not None:
                await services.webhook_sender.stop()
            await relay.stop()
            await broker.stop()
            await http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="genimage API",
        version="1.0.0",
        description="Generate images and videos from prompts; keep them in a gallery.\n\n"
        "Authenticate with `Authorization: Bearer <access token | API key>`. Errors are RFC 9457 "
        "`application/problem+json` with a stable `code`. Every response carries `RateLimit` and "
        "`RateLimit-Policy` headers; `429` adds `Retry-After`. See docs/api.md for idempotency, "
        "`Prefer: wait`, Server-Sent Events and webhooks.",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    instrument_fastapi(app)  # FastAPI's native HTTP spans, minus probes and scrapes
    problems.install(app)
    openapi.install(app)
    asyncapi.install(app, settings.nats_url)
    routers = (
        auth,
        account,
        uploads,
        generations,
        events,
        webhooks,
        images,
        boards,
        feed,
        stats,
        credits,
        billing,
        admin,
    )
    for module in (*routers, health):
        app.include_router(module.router)
    app.add_middleware(Gatekeeper)
    app.add_middleware(RedMetrics)  # outermost: also counts what the gatekeeper refuses
    return app
