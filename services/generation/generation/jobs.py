"""One generation job: started → progress → completed | failed, outputs in object storage."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker

from genimage_common.catalog import ModelSpec
from genimage_common.events import (
    ErrorInfo,
    Event,
    EventData,
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationRequested,
    GenerationStarted,
    Timings,
    make_event,
    parse_event,
    utcnow,
)
from genimage_common.ids import transition_event_id
from genimage_common.logging import log_context
from genimage_common.messaging import publish_event
from genimage_common.storage import ObjectStore
from genimage_common.streams import GENERATION

from .outputs import manifest_key, store_output
from .providers.base import Provider, ProviderError, RenderRequest

log = logging.getLogger(__name__)
SOURCE = "genimage/generation"


@dataclass
class JobContext:
    broker: NatsBroker
    store: ObjectStore
    catalog: dict[str, ModelSpec]
    providers: dict[str, Provider]
    progress_interval_s: float


async def emit(ctx: JobContext, data: EventData, *, transition: str | None) -> Event[Any]:
    gid = data.generation_id  # type: ignore[attr-defined]
    event_id = transition_event_id(gid, transition) if transition else None
    event = make_event(data, source=SOURCE, subject=gid, event_id=event_id)
    await publish_event(ctx.broker, event, stream=GENERATION)
    return event


async def run_job(
    ctx: JobContext,
    event: Event[GenerationRequested],
    *,
    attempt: int,
    last_attempt: bool,
    keepalive: Callable[[], Awaitable[None]],
) -> None:
    req = event.data
    with log_context(generation_id=req.generation_id, user_id=req.user_id):
        manifest = manifest_key(req.user_id, req.generation_id)
        if await ctx.store.stat(manifest) is not None:
            # Done before (we were redelivered after the upload): the same completed event again.
            done = parse_event(await ctx.store.get(manifest))
            await publish_event(ctx.broker, done, stream=GENERATION)
            log.info("job already completed, re-published its event")
            return

        spec = ctx.catalog.get(req.model)
        provider = ctx.providers.get(spec.provider) if spec else None
        if spec is None or provider is None:
            await _fail(ctx, req, "invalid_input", f"unknown model {req.model!r}", attempt)
            return

        started_at = time.monotonic()
        queue_ms = int((utcnow() - (req.requested_at or event.time)).total_seconds() * 1000)
        await emit(
            ctx,
            GenerationStarted(
                user_id=req.user_id, generation_id=req.generation_id, provider=provider.name, attempt=attempt
            ),
            transition=f"started:{attempt}",
        )
        last_progress = 0.0

        async def progress(value: float, stage: str) -> None:
            nonlocal last_progress
            await keepalive()
            now = time.monotonic()
            if value < 1 and now - last_progress < ctx.progress_interval_s:
                return
            last_progress = now
            await emit(
                ctx,
                GenerationProgress(
                    user_id=req.user_id, generation_id=req.generation_id, progress=round(value, 3), stage=stage
                ),
                transition=None,
            )

        request = RenderRequest(
            kind=req.kind,
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            model=spec.model or spec.name,
            width=req.width,
            height=req.height,
            n=req.n,
            seed=req.seed,
            output_format=req.output_format,
            watermark=req.watermark,
            duration_s=req.duration_s,
        )
        try:
            rendered = await provider.generate(request, progress=progress)
        except ProviderError as exc:
            if exc.retryable and not last_attempt:
                raise
            await _fail(ctx, req, exc.code, exc.message, attempt, retryable=exc.retryable)
            return

        outputs = []
        for index, item in enumerate(rendered):
            outputs.append(
                await store_output(
                    ctx.store, user_id=req.user_id, generation_id=req.generation_id, index=index, rendered=item
                )
            )
            await keepalive()
        run_ms = int((time.monotonic() - started_at) * 1000)
        completed = make_event(
            GenerationCompleted(
                user_id=req.user_id,
                generation_id=req.generation_id,
                outputs=outputs,
                provider=provider.name,
                model=req.model,
                seed=req.seed,
                timings=Timings(queue_ms=max(queue_ms, 0), run_ms=run_ms),
            ),
            source=SOURCE,
            subject=req.generation_id,
            event_id=transition_event_id(req.generation_id, "terminal"),
        )
        await ctx.store.put(manifest, completed.model_dump_json().encode(), "application/json")
        await publish_event(ctx.broker, completed, stream=GENERATION)
        log.info("job completed", extra={"outputs": len(outputs), "run_ms": run_ms})


async def _fail(
    ctx: JobContext, req: GenerationRequested, code: str, message: str, attempts: int, *, retryable: bool = False
) -> None:
    log.warning("job failed", extra={"code": code, "error": message})
    await emit(
        ctx,
        GenerationFailed(
            user_id=req.user_id,
            generation_id=req.generation_id,
            error=ErrorInfo(code=code, message=message, retryable=retryable),
            attempts=attempts,
        ),
        transition="terminal",
    )
