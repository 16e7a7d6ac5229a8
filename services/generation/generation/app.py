"""Wiring of the generation worker; nothing connects at import."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.asgi import AsgiFastStream

from genimage_common.catalog import load_catalog
from genimage_common.messaging import watch_dependencies
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams
from genimage_common.worker import build_worker_app, worker_broker

from . import consumers
from .cancellation import CancelRegistry
from .chain import ProviderChain
from .context import JobContext
from .intake import JobIntake, documentation
from .providers.http import RetryPolicy
from .providers.registry import build_providers, validate_catalog
from .settings import GenerationSettings
from .state import JobState

SERVICE = "generation"


def create_app(settings: GenerationSettings | None = None) -> AsgiFastStream:
    settings = settings or GenerationSettings()
    broker = worker_broker(SERVICE, settings, consumers.router, policy=settings.redelivery_policy())
    store = ObjectStore(settings)
    watch_dependencies(broker, {"s3": store.ping})
    catalog = load_catalog(settings.models_file)
    validate_catalog(catalog)
    policy = RetryPolicy(attempts=settings.retry_attempts, base_s=settings.retry_base_s, max_s=settings.retry_max_s)
    # API keys are read once, from the variables the catalog names.
    providers = build_providers(catalog, policy=policy, environ=os.environ, max_input_pixels=settings.max_input_pixels)
    cancels = CancelRegistry()
    running: dict[str, JobIntake | JobState] = {}

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, settings)
        await store.ensure_bucket()
        state = await JobState.open(
            js, bucket=settings.state_bucket, ttl_s=settings.state_ttl_s, replicas=settings.stream_replicas
        )
        running["state"] = state
        ctx = JobContext(
            broker=broker,
            store=store,
            catalog=catalog,
            chain=ProviderChain(catalog, providers),
            state=state,
            cancels=cancels,
            settings=settings,
        )
        broker.context.set_global("jobs", ctx)
        running["intake"] = JobIntake(ctx, js)
        try:
            yield
        finally:
            for provider in providers.values():
                await provider.aclose()

    async def start_consuming() -> None:
        # After the broker started: the cancel watch and the job intake need its connection.
        state = running["state"]
        assert isinstance(state, JobState)
        await state.watch_cancels(cancels.cancel)
        intake = running["intake"]
        assert isinstance(intake, JobIntake)
        await intake.start()

    async def stop_consuming() -> None:
        # Before the broker stops: running jobs finish (or are handed back) while NATS is there.
        intake = running.get("intake")
        if isinstance(intake, JobIntake):
            await intake.stop()
        state = running.get("state")
        if isinstance(state, JobState):
            await state.stop()

    async def intake_alive() -> None:
        intake = running.get("intake")
        if not isinstance(intake, JobIntake):
            raise RuntimeError("not started")
        await intake.check()

    return build_worker_app(
        broker,
        title="genimage generation",
        checks={"s3": store.ping, "intake": intake_alive},
        lifespan=lifespan,
        after_startup=[start_consuming],
        on_shutdown=[stop_consuming],
        documented=[documentation(settings.nats_url)],
    )
