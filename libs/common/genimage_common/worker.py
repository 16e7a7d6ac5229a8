"""The process shell of a FastStream worker: broker + ``/healthz``, ``/readyz``, ``/metrics`` and
the AsyncAPI document on one small ASGI app served by uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsBroker, NatsRouter
from faststream.specification import AsyncAPI
from prometheus_client import REGISTRY, make_asgi_app

from .logging import configure_logging
from .messaging import make_broker
from .redelivery import RedeliveryPolicy
from .settings import CommonSettings
from .telemetry import build_info, configure_tracing

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


async def readiness(broker: NatsBroker, checks: dict[str, Check]) -> dict[str, str]:
    """What is not ready (empty when all is): the NATS connection and each dependency check."""
    failed: dict[str, str] = {}
    if not broker.connection or not broker.connection.is_connected:
        failed["nats"] = "not connected"
    elif broker.subscribers and not broker.running:
        # FastStream completes the ASGI startup before it starts the subscribers: until they
        # run, requests to this service would find no responders.
        failed["subscribers"] = "starting"
    for name, check in checks.items():
        try:
            await check()
        except Exception as exc:  # a readiness probe reports, it does not raise
            failed[name] = type(exc).__name__
    return failed


def worker_broker(
    service: str, settings: CommonSettings, *routers: NatsRouter, policy: RedeliveryPolicy | None = None
) -> NatsBroker:
    """What every worker process sets up first: JSON logs, tracing, the build-info metric, and
    its broker (not connected) with the shared error policy — ``policy``, else the shared
    ``TRANSIENT_RETRY_*`` settings — and its routers."""
    configure_logging(service, settings.log_level)
    configure_tracing(service)
    build_info(service)
    broker = make_broker(settings.nats_url, service=service, policy=policy or RedeliveryPolicy.from_settings(settings))
    for router in routers:
        broker.include_router(router)
    return broker


def build_worker_app(
    broker: NatsBroker,
    *,
    title: str,
    checks: dict[str, Check],
    lifespan: Any = None,
    on_startup: Sequence[Callable[..., Any]] = (),
    after_startup: Sequence[Callable[..., Any]] = (),
    on_shutdown: Sequence[Callable[..., Any]] = (),
    documented: Sequence[NatsBroker] = (),
) -> AsgiFastStream:
    """``documented``: brokers that are never connected, holding declarations of what the
    service consumes by other means (a hand-written pull loop), so that its AsyncAPI
    document shows them too."""

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', status_code=200, headers={"content-type": "application/json"})

    @get
    async def readyz(scope: Any) -> AsgiResponse:
        import json

        failed = await readiness(broker, checks)
        body = {"status": "ok" if not failed else "unavailable", "failed": failed}
        return AsgiResponse(
            json.dumps(body).encode(),
            status_code=200 if not failed else 503,
            headers={"content-type": "application/json"},
        )

    return AsgiFastStream(
        broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app(REGISTRY))],
        asyncapi_path="/docs/asyncapi",
        logger=logging.getLogger("genimage.faststream"),
        specification=AsyncAPI(*documented, title=title, version="1.0.0"),
        lifespan=lifespan,
        on_startup=on_startup,
        after_startup=after_startup,
        on_shutdown=on_shutdown,
    )


def serve(app: Any, settings: CommonSettings) -> None:
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
