"""One generation job: started → progress → completed | failed | canceled, outputs in object storage.

Exactly one terminal event per generation, whatever happens: every outcome goes through
``outcome.settle`` (recorded create-if-absent in the shared state bucket, then published). A
job that finds an outcome recorded re-publishes that very event and renders nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from genimage_common.events import (
    ErrorInfo,
    Event,
    EventData,
    GenerationCanceled,
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
from genimage_common.streams import GENERATION

from .cancellation import CancelToken
from .context import JobContext
from .errors import DeadlineExceeded, GenerationError, JobCanceled, JobInvalid, ProviderAuth
from .inputs import load_inputs
from .metrics import GENERATION_DURATION
from .outcome import SOURCE, Labels, settle, terminal_event
from .outputs import discard, manifest_key, store_output
from .providers.base import Provider, RenderRequest
from .settings import GenerationSettings

log = logging.getLogger(__name__)

__all__ = ["JobContext", "fail", "run_job"]


async def emit(ctx: JobContext, data: EventData, *, transition: str | None) -> Event[Any]:
    gid = data.generation_id  # type: ignore[attr-defined]
    event = make_event(
        data, source=SOURCE, subject=gid, event_id=transition_event_id(gid, transition) if transition else None
    )
    await publish_event(ctx.broker, event, stream=GENERATION)
    return event


# What the worker accepts whatever published the request (the gateway validates more strictly).
MAX_SIDE = 4096
MAX_PIXELS = 4096 * 4096
MAX_VIDEO_SIDE = 1920
MAX_OUTPUTS = 10
VIDEO_SECONDS = (1.0, 30.0)
MAX_PROMPT = 10_000


def check_request(req: GenerationRequested) -> None:
    """Bounds that keep a malformed request from exhausting the worker: an invalid job."""
    if not (16 <= req.width <= MAX_SIDE and 16 <= req.height <= MAX_SIDE) or req.width * req.height > MAX_PIXELS:
        raise JobInvalid(f"size {req.width}x{req.height} is out of bounds")
    if not 1 <= req.n <= MAX_OUTPUTS:
        raise JobInvalid(f"n={req.n} is out of bounds")
    if len(req.prompt) > MAX_PROMPT or len(req.negative_prompt or "") > MAX_PROMPT:
        raise JobInvalid("prompt too long")
    if req.kind == "video":
        if max(req.width, req.height) > MAX_VIDEO_SIDE or req.width % 2 or req.height % 2:
            raise JobInvalid(f"video size {req.width}x{req.height} is out of bounds")
        if req.duration_s is not None and not VIDEO_SECONDS[0] <= req.duration_s <= VIDEO_SECONDS[1]:
            raise JobInvalid(f"video duration {req.duration_s}s is out of bounds")


def deadline_for(req: GenerationRequested, settings: GenerationSettings) -> float:
    """Monotonic time by which the job must be done: before the hold expires, with a margin."""
    hold_left = (req.hold_expires_at - utcnow()).total_seconds() - settings.deadline_margin_s
    return time.monotonic() + min(hold_left, settings.max_job_s)


async def run_job(ctx: JobContext, event: Event[GenerationRequested], *, attempt: int) -> None:
    req = event.data
    gid = req.generation_id
    labels = Labels(req.kind, req.model)
    with log_context(generation_id=str(gid), user_id=str(req.user_id)):
        done = await ctx.state.terminal(gid)
        if done is not None:
            # Settled before (redelivered after the outcome, or canceled while queued).
            await publish_event(ctx.broker, done, stream=GENERATION)
            log.info("generation already settled, re-published its outcome", extra={"type": done.type})
            return
        recovered = await _recover_manifest(ctx, req)
        if recovered is not None:
            await settle(ctx, recovered, labels=labels)
            log.info("generation finished before its worker died, published its outcome")
            return
        canceled = terminal_event(GenerationCanceled(user_id=req.user_id, generation_id=gid))
        # Tracked before the flag is read: a cancel landing from now on reaches the token.
        with ctx.cancels.track(gid) as token:
            if await ctx.state.cancel_requested(gid):
                # Canceled while queued: never runs.
                await settle(ctx, canceled, labels=labels)
                return
            try:
                await _execute(ctx, event, attempt=attempt, token=token)
            except JobCanceled:
                log.info("generation canceled while running")
                await settle(ctx, canceled, labels=labels)
            except GenerationError as exc:
                await fail(ctx, req, exc.code, public_message(exc, req.model), attempt=attempt, retryable=exc.retryable)


def public_message(exc: GenerationError, model: str) -> str:
    """What the user may read: provider configuration problems (keys, quotas) stay in our logs."""
    if isinstance(exc, ProviderAuth):
        log.error("provider configuration problem", extra={"error": exc.message[:500]})
        return f"model {model!r} is unavailable right now"
    return exc.message


async def fail(
    ctx: JobContext, req: GenerationRequested, code: str, message: str, *, attempt: int, retryable: bool = False
) -> None:
    log.warning("generation failed", extra={"code": code, "error": message[:500], "attempt": attempt})
    data = GenerationFailed(
        user_id=req.user_id,
        generation_id=req.generation_id,
        error=ErrorInfo(code=code, message=message[:1000], retryable=retryable),
        attempts=attempt,
    )
    await settle(ctx, terminal_event(data), labels=Labels(req.kind, req.model))


async def _recover_manifest(ctx: JobContext, req: GenerationRequested) -> Event[Any] | None:
    """Outputs stored and the manifest written, but the outcome never recorded (the worker died
    in between): the manifest's event, so that the same ``completed`` goes out."""
    key = manifest_key(req.user_id, req.generation_id)
    if await ctx.store.stat(key) is None:
        return None
    return parse_event(await ctx.store.get(key))


async def _settled(ctx: JobContext, generation_id: Any) -> bool:
    """Whether the generation's outcome is recorded. When that cannot be read (the state bucket
    is on NATS), the progress is published as before: its publish meets the same outage."""
    try:
        return await ctx.state.terminal(generation_id) is not None
    except Exception as exc:
        log.debug("could not read the terminal state", extra={"error": repr(exc)})
        return False


async def _execute(ctx: JobContext, event: Event[GenerationRequested], *, attempt: int, token: CancelToken) -> None:
    req = event.data
    gid = req.generation_id
    check_request(req)
    spec = ctx.catalog.get(req.model)
    if spec is None:
        raise JobInvalid(f"unknown model {req.model!r}")
    if not spec.supports(req.kind):
        raise JobInvalid(f"model {req.model!r} does not make {req.kind}s")
    deadline = deadline_for(req, ctx.settings)
    if deadline <= time.monotonic():
        raise DeadlineExceeded("the billing hold expires before the job could run")
    inputs = await load_inputs(ctx.store, user_id=req.user_id, upload_ids=req.input_image_ids)

    started_at = time.monotonic()
    queue_s = max(0.0, (utcnow() - (req.requested_at or event.time)).total_seconds())
    if attempt == 1:
        GENERATION_DURATION.labels(kind=req.kind, phase="queue").observe(queue_s)
    last_progress = 0.0

    async def progress(value: float, stage: str) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if value < 1 and now - last_progress < ctx.settings.progress_interval_s:
            return
        last_progress = now
        if await _settled(ctx, gid):
            # Ended meanwhile (elsewhere: this job redelivered to another replica, or a cancel or
            # an expired hold): no progress may follow the terminal event; stop rendering.
            token.cancel()
            return
        data = GenerationProgress(
            user_id=req.user_id, generation_id=gid, progress=round(min(value, 1.0), 3), stage=stage
        )
        await emit(ctx, data, transition=None)

    async def on_start(provider: Provider) -> None:
        data = GenerationStarted(user_id=req.user_id, generation_id=gid, provider=provider.name, attempt=attempt)
        await emit(ctx, data, transition=f"started:{attempt}:{provider.model}")

    request = RenderRequest(
        kind=req.kind,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=req.width,
        height=req.height,
        n=req.n,
        seed=req.seed,
        output_format=req.output_format,
        watermark=req.watermark,
        duration_s=req.duration_s,
        aspect_ratio=req.aspect_ratio,
        input_images=inputs,
    )
    result = await ctx.chain.run(
        req.model, request, deadline=deadline, progress=progress, cancel=token, on_start=on_start
    )
    token.raise_if_canceled()
    if await ctx.state.terminal(gid) is not None:
        # Settled meanwhile (a cancel raced the end of the run): store nothing.
        raise JobCanceled()

    await progress(0.97, "storing")
    outputs = list(
        await asyncio.gather(
            *(
                store_output(ctx.store, user_id=req.user_id, generation_id=gid, index=index, rendered=rendered)
                for index, rendered in enumerate(result.outputs)
            )
        )
    )
    run_s = time.monotonic() - started_at
    completed = terminal_event(
        GenerationCompleted(
            user_id=req.user_id,
            generation_id=gid,
            outputs=outputs,
            provider=result.provider,
            model=result.model,
            seed=req.seed,
            timings=Timings(queue_ms=int(queue_s * 1000), run_ms=int(run_s * 1000)),
            provider_cost_usd=result.provider_cost_usd,
        )
    )
    await ctx.store.put(manifest_key(req.user_id, gid), completed.model_dump_json().encode(), "application/json")
    await progress(1.0, "done")

    async def lost(_: Event[Any]) -> None:
        # Settled otherwise meanwhile (a cancel raced the end): nobody pays for these outputs.
        await discard(ctx.store, user_id=req.user_id, generation_id=gid, outputs=outputs)

    _, won = await settle(ctx, completed, labels=Labels(req.kind, req.model), on_other=lost)
    if won:
        GENERATION_DURATION.labels(kind=req.kind, phase="run").observe(run_s)
    log.info(
        "generation completed",
        extra={
            "outputs": len(outputs),
            "run_ms": int(run_s * 1000),
            "provider": result.provider,
            "model": result.model,
            "fallbacks": result.failures,
        },
    )
