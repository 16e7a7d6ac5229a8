"""Event handlers of the generation worker besides the job queue (``intake.py``): cancel
requests, deleted images, and expired holds (the backstop that ends a generation whose credits
billing refunded because it never finished, ADR 22). All are idempotent; failures follow the
shared error policy (transient ones retried while the dependency is away, others a bounded
number of times, then the DLQ)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from faststream import Context
from faststream.nats import NatsRouter
from nats.js.api import DeliverPolicy

from genimage_common.events import (
    CreditsRefunded,
    ErrorInfo,
    Event,
    GenerationCanceled,
    GenerationCancelRequested,
    GenerationFailed,
    ImageDeleted,
    utcnow,
)
from genimage_common.logging import log_context
from genimage_common.messaging import durable
from genimage_common.streams import BILLING, GALLERY, GENERATION
from genimage_common.subjects import any_user

from .context import JobContext
from .outcome import settle, terminal_event
from .outputs import owned_keys

log = logging.getLogger(__name__)
Jobs = Annotated[JobContext, Context("jobs")]
router = NatsRouter()


@router.subscriber(
    any_user(GenerationCancelRequested.name), **durable(GENERATION, "generation-cancel-requested", batch=8)
)
async def on_cancel_requested(event: Event[GenerationCancelRequested], ctx: Jobs) -> None:
    """Flag the cancel for every replica (a queued job never runs, a running one stops), then
    settle the generation as canceled unless it already has an outcome."""
    gid = event.data.generation_id
    with log_context(generation_id=str(gid), user_id=str(event.data.user_id)):
        await ctx.state.request_cancel(gid)
        ctx.cancels.cancel(gid)
        canceled = terminal_event(GenerationCanceled(user_id=event.data.user_id, generation_id=gid))
        # Also when not won: a redelivered cancel re-publishes (deduplicated) in case we died
        # before; an outcome of another kind is the job's to publish.
        stored, won = await settle(ctx, canceled, publish_other=False)
        if stored.type != canceled.type:
            log.info("cancel requested after the generation ended", extra={"outcome": stored.type})
        elif won:
            log.info("generation canceled")


@router.subscriber(any_user(ImageDeleted.name), **durable(GALLERY, "generation-image-deleted"))
async def on_image_deleted(event: Event[ImageDeleted], ctx: Jobs) -> None:
    """The gallery purged an image: delete its objects (deleting twice is harmless). Only keys
    under the user's own prefix are touched."""
    mine, foreign = owned_keys(event.data.user_id, event.data.object_keys)
    with log_context(user_id=str(event.data.user_id)):
        if foreign:
            log.warning("refusing to delete objects outside the user's prefix", extra={"count": len(foreign)})
        if mine:
            await ctx.store.delete(mine)
            log.info(
                "deleted objects of a purged image", extra={"image_id": str(event.data.image_id), "count": len(mine)}
            )


EXPIRED = "expired"
EXPIRED_MESSAGE = "the generation did not finish before its credit hold expired; the credits were refunded"


def expired_event(event: Event[CreditsRefunded]) -> Event[GenerationFailed]:
    data = event.data
    return terminal_event(
        GenerationFailed(
            user_id=data.user_id,
            generation_id=data.generation_id,
            error=ErrorInfo(code=EXPIRED, message=EXPIRED_MESSAGE, retryable=True),
            # No attempt of ours ended it.
            attempts=0,
        )
    )


@router.subscriber(
    any_user(CreditsRefunded.name),
    # Created once, from then on: the refunds of before are older than any outcome we keep.
    **durable(BILLING, "generation-hold-expired", deliver_policy=DeliverPolicy.NEW),
)
async def on_credits_refunded(event: Event[CreditsRefunded], ctx: Jobs) -> None:
    """Billing's sweeper refunded a hold that expired: the generation must not stay queued or
    running for ever. Unless it already has an outcome, it fails with ``expired`` (through the
    terminal record: exactly one outcome, even racing a completion); the recorded outcome is
    (re-)published either way. A job redelivered afterwards finds it and never renders."""
    data = event.data
    if data.reason != EXPIRED:
        return  # failed / canceled: refunds that follow an outcome we published
    gid = data.generation_id
    with log_context(generation_id=str(gid), user_id=str(data.user_id)):
        if event.time < utcnow() - timedelta(seconds=ctx.settings.state_ttl_s):
            # Its terminal record, if any, is gone: we cannot tell whether it ended otherwise.
            log.warning("expired hold older than the state bucket's memory, ignored")
            return
        stored, won = await settle(ctx, expired_event(event))
        if won:
            # A job of this replica still running for it stops (and publishes the recorded outcome).
            ctx.cancels.cancel(gid)
            log.warning("generation failed: its credit hold expired first", extra={"code": EXPIRED})
        elif stored.type != GenerationFailed.event_type() or stored.data.error.code != EXPIRED:
            log.info("hold expired after the generation ended", extra={"outcome": stored.type})
