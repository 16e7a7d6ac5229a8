"""Event handlers of the generation worker besides the job queue (``intake.py``): cancel
requests and deleted images. Both are idempotent; failures follow the shared error policy
(bounded redelivery, then the DLQ)."""

from __future__ import annotations

import logging
from typing import Annotated

from faststream import Context
from faststream.nats import JStream, NatsRouter, PullSub

from genimage_common.events import Event, GenerationCanceled, GenerationCancelRequested, ImageDeleted
from genimage_common.logging import log_context
from genimage_common.messaging import publish_event
from genimage_common.streams import GALLERY, GENERATION
from genimage_common.subjects import any_user

from .jobs import JobContext, terminal_event
from .metrics import GENERATIONS
from .outputs import owned_keys

log = logging.getLogger(__name__)
Jobs = Annotated[JobContext, Context("jobs")]
router = NatsRouter()


@router.subscriber(
    any_user(GenerationCancelRequested.name),
    stream=JStream(GENERATION, declare=False),
    durable="generation-cancel-requested",
    pull_sub=PullSub(batch_size=8, timeout=1.0),
)
async def on_cancel_requested(event: Event[GenerationCancelRequested], ctx: Jobs) -> None:
    """Flag the cancel for every replica (a queued job never runs, a running one stops), then
    settle the generation as canceled unless it already has an outcome."""
    gid = event.data.generation_id
    with log_context(generation_id=str(gid), user_id=str(event.data.user_id)):
        await ctx.state.request_cancel(gid)
        ctx.cancels.cancel(gid)
        canceled = terminal_event(GenerationCanceled(user_id=event.data.user_id, generation_id=gid))
        stored, won = await ctx.state.settle(gid, canceled)
        if stored.type != canceled.type:
            log.info("cancel requested after the generation ended", extra={"outcome": stored.type})
            return
        # Also when not won: a redelivered cancel re-publishes (deduplicated) in case we died before.
        await publish_event(ctx.broker, stored, stream=GENERATION)
        if won:
            GENERATIONS.labels(kind="unknown", model="unknown", status="canceled").inc()
            log.info("generation canceled")


@router.subscriber(
    any_user(ImageDeleted.name),
    stream=JStream(GALLERY, declare=False),
    durable="generation-image-deleted",
    pull_sub=PullSub(batch_size=16, timeout=1.0),
)
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
