"""Event handlers of the generation worker."""

from __future__ import annotations

from typing import Annotated

from faststream import Context
from faststream.nats import JStream, NatsMessage, NatsRouter, PullSub

from genimage_common.events import Event, GenerationRequested
from genimage_common.messaging import MAX_DELIVER
from genimage_common.streams import GENERATION
from genimage_common.subjects import any_user

from .jobs import JobContext, run_job

Jobs = Annotated[JobContext, Context("jobs")]


async def on_requested(event: Event[GenerationRequested], msg: NatsMessage, ctx: Jobs) -> None:
    attempt = msg.raw_message.metadata.num_delivered
    await run_job(
        ctx,
        event,
        attempt=attempt,
        last_attempt=attempt >= MAX_DELIVER,
        # Tells JetStream we are still working, so a long job is not redelivered meanwhile.
        keepalive=msg.in_progress,
    )


def build_router(*, concurrency: int) -> NatsRouter:
    """Subscribers need the configured concurrency, so the router is built, not imported."""
    router = NatsRouter()
    router.subscriber(
        any_user(GenerationRequested.name),
        stream=JStream(GENERATION, declare=False),
        durable="generation-requested",
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        max_workers=concurrency,
    )(on_requested)
    return router
