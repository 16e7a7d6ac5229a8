"""Generations: create (validate, check inputs, reserve credits, record the webhook, then once
that is committed take an in-flight slot and publish ``generation.requested``), read with
read-your-writes grace, wait, cancel."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from contextlib import suppress
from functools import partial
from typing import Any

from prometheus_client import Counter

from genimage_common.catalog import DEFAULT_MODEL
from genimage_common.contracts.billing import ReleaseRequest, ReserveRequest
from genimage_common.contracts.gallery import GenerationRef
from genimage_common.contracts.records import GenerationRecord
from genimage_common.contracts.status import GenerationStatus, is_terminal
from genimage_common.errors import Conflict, DomainError, NotFound, ServiceUnavailable, ValidationFailed
from genimage_common.events import Event, GenerationCancelRequested, GenerationRequested, make_event, utcnow
from genimage_common.ids import derived_id, generation_id_for, transition_event_id
from genimage_common.messaging import publish_event
from genimage_common.streams import GENERATION

from . import repository as repo
from . import ssrf, webhooks
from .deps import Services
from .errors import RateLimited
from .live import TerminalWatch
from .schemas.generations import GenerationCreate
from .unit_of_work import Work

SOURCE = "genimage/gateway"
POLL_S = 0.05
PUBLISH_RETRY_S = 0.1

log = logging.getLogger(__name__)

NOT_QUEUED = Counter(
    "genimage_generations_not_queued_total",
    "Generations reserved but not published; their hold released, or kept until it expires",
    ["outcome"],
)


def _seed(body: GenerationCreate, generation_id: uuid.UUID, idempotency_key: str | None) -> int:
    if body.seed is not None:
        return body.seed
    if idempotency_key is not None:
        # A retried request renders the same picture.
        return derived_id("seed", generation_id).int % 2**32
    return random.SystemRandom().randrange(2**32)


async def _check_inputs(services: Services, user_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    """Every input must be an upload of this user (another user's upload is simply unknown)."""
    owned = await asyncio.gather(*(services.uploads.owned(user_id=user_id, upload_id=i) for i in ids))
    missing = [{"loc": ["body", "input_image_ids", n], "msg": "no such upload"} for n, ok in enumerate(owned) if not ok]
    if missing:
        raise ValidationFailed("unknown input image", errors=missing)


async def _check_webhook(services: Services, url: str) -> None:
    try:
        settings = services.settings
        await ssrf.resolve(
            url, ssrf.parse_networks(settings.webhook_allowed_networks), public=settings.webhook_public_targets
        )
    except ssrf.TargetRefused as exc:
        raise ValidationFailed(str(exc), errors=[{"loc": ["body", "webhook"], "msg": str(exc)}]) from exc


async def _publish_requested(services: Services, event: Event[Any]) -> None:
    """Publish ``generation.requested``, retried until the publish deadline: a retry is safe
    (JetStream deduplicates it by ``Nats-Msg-Id``), and a NATS blip (a leader election, a
    reconnect) should not cost the user a refused request."""
    deadline = time.monotonic() + services.settings.publish_deadline_s
    delay = PUBLISH_RETRY_S
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, PUBLISH_RETRY_S)):
                await publish_event(services.broker, event, stream=GENERATION)
            return
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if remaining <= delay:
                raise
            log.warning(
                "publishing generation.requested failed; retrying",
                extra={"generation_id": str(event.subject), "error": repr(exc)[:300]},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _abandon(
    services: Services, *, user_id: uuid.UUID, generation_id: uuid.UUID, cause: Exception
) -> DomainError:
    """Void the hold of a generation that was not queued (``rpc.billing.release``); the error to
    answer with says what happened to the credits."""
    log.error(
        "generation not queued; releasing its hold",
        extra={"generation_id": str(generation_id), "user_id": str(user_id), "error": repr(cause)[:300]},
    )
    try:
        reply = await services.billing.release(ReleaseRequest(generation_id=generation_id, user_id=user_id))
    except Exception:
        log.exception(
            "releasing the hold failed; it is refunded when it expires", extra={"generation_id": str(generation_id)}
        )
        NOT_QUEUED.labels("hold_kept").inc()
        return ServiceUnavailable(
            "the generation could not be queued; the credits reserved for it are refunded when the hold expires",
            generation_id=str(generation_id),
            retry_after=5,
        )
    NOT_QUEUED.labels("released").inc()
    return ServiceUnavailable(
        "the generation could not be queued; no credits were taken",
        generation_id=str(generation_id),
        credits_refunded=reply.amount,
        retry_after=5,
    )


async def create(
    services: Services, work: Work, *, user_id: uuid.UUID, body: GenerationCreate, idempotency_key: str | None
) -> GenerationRecord:
    """Accept a generation in the route's unit of work ``work``: its credits are reserved and its
    webhook recorded in the transaction, which commits only if the reserve succeeded (a 402
    leaves nothing behind); once it is committed, the generation is queued. Returns it as
    queued."""
    model = body.model or DEFAULT_MODEL
    spec = services.catalog.get(model)
    if spec is None:
        raise ValidationFailed(
            f"unknown model {model!r}", errors=[{"loc": ["body", "model"], "msg": f"one of {sorted(services.catalog)}"}]
        )
    if not spec.supports(body.kind):
        # Refused here rather than failed (and refunded) by the worker.
        raise ValidationFailed(
            f"model {model!r} does not make {body.kind}s", errors=[{"loc": ["body", "kind"], "msg": "not supported"}]
        )
    if body.input_image_ids:
        await _check_inputs(services, user_id, body.input_image_ids)
    webhook = str(body.webhook) if body.webhook is not None else None
    if webhook is not None:
        await _check_webhook(services, webhook)
    width, height = body.size()
    units = body.n
    cost = services.pricing.cost(body.kind, units)
    generation_id = generation_id_for(user_id, idempotency_key)
    limit = services.settings.max_inflight_generations
    if not await services.inflight.admits(str(user_id), str(generation_id), limit=limit):
        raise RateLimited(f"at most {limit} generations may run at once", retry_after=5, policy="inflight")
    if webhook is not None:
        # Written before the reserve, committed after it: it exists before any event of the
        # generation can look for it, and never for a generation refused its credits.
        await repo.insert_webhook_subscription(
            work.session,
            generation_id=generation_id,
            user_id=user_id,
            url=webhook,
            events=list(dict.fromkeys(body.webhook_events or webhooks.ALL_FILTERS)),
        )
    reply = await services.billing.reserve(
        ReserveRequest(generation_id=generation_id, user_id=user_id, amount=cost, units=units)
    )
    if reply.hold.status == "voided":
        # A retry (same Idempotency-Key, hence same generation id) of a request whose credits
        # were given back: its hold can never hold again, and billing charges nothing for a
        # voided hold, so queueing it would run it for free.
        raise Conflict(
            "a request with this Idempotency-Key was not queued and its credits were refunded; "
            "send it again with a new Idempotency-Key",
            generation_id=str(generation_id),
        )
    abandon = partial(_abandon, services, user_id=user_id, generation_id=generation_id)
    # From here on the credits are held: whatever keeps the generation from being queued gives
    # them back at once, instead of when the hold expires.
    work.if_rolled_back(abandon)
    data = GenerationRequested(
        user_id=user_id,
        generation_id=generation_id,
        kind=body.kind,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        model=model,
        width=width,
        height=height,
        n=body.n,
        seed=_seed(body, generation_id, idempotency_key),
        aspect_ratio=body.aspect_ratio,
        duration_s=(body.duration_s or 4.0) if body.kind == "video" else None,
        input_image_ids=body.input_image_ids,
        output_format=body.output_format,
        watermark=body.watermark,
        cost=cost,
        hold_expires_at=reply.hold.expires_at,
        requested_at=utcnow(),
    )
    work.after_commit(partial(_queue, services, data, abandon))
    return _as_queued(data)


async def _queue(services: Services, data: GenerationRequested, abandon: Any) -> None:
    """Publish the accepted generation; when it cannot be, give its slot and credits back."""
    slot_user, slot = str(data.user_id), str(data.generation_id)
    try:
        # Taken before publishing: the terminal event, which gives it back, cannot come first.
        await services.inflight.add(slot_user, slot)
        event = make_event(
            data,
            source=SOURCE,
            subject=data.generation_id,
            event_id=transition_event_id(data.generation_id, "requested"),
        )
        await _publish_requested(services, event)
    except Exception as exc:
        # Nothing was queued: give the slot and the credits back now, not when the hold expires.
        with suppress(Exception):
            await services.inflight.release(slot_user, slot)
        raise await abandon(cause=exc) from exc
    except BaseException:
        # Cancelled mid-publish: whether it went out is unknown, so the hold is left to the
        # worker's outcome or to its expiry.
        with suppress(Exception):
            await services.inflight.release(slot_user, slot)
        raise


def _as_queued(data: GenerationRequested) -> GenerationRecord:
    """The generation as the gallery will show it once it projected the request."""
    return GenerationRecord(
        id=data.generation_id,
        status=GenerationStatus.QUEUED,
        kind=data.kind,
        prompt=data.prompt,
        negative_prompt=data.negative_prompt,
        model=data.model,
        width=data.width,
        height=data.height,
        n=data.n,
        seed=data.seed,
        output_format=data.output_format,
        progress=0.0,
        cost=data.cost,
        created_at=data.requested_at,
    )


async def _gallery_get(services: Services, user_id: uuid.UUID, generation_id: uuid.UUID) -> GenerationRecord:
    return await services.gallery.get_generation(GenerationRef(user_id=user_id, generation_id=generation_id))


async def get(services: Services, *, user_id: uuid.UUID, generation_id: uuid.UUID) -> GenerationRecord:
    """The generation from the gallery's read model. One this user just created may not be
    projected yet: it is in the user's in-flight slots, so it is waited for (briefly)
    instead of answering 404. Another user's id is never in them: 404 at once."""
    try:
        return await _gallery_get(services, user_id, generation_id)
    except NotFound:
        if services.settings.projection_grace_s <= 0 or not await services.inflight.holds(
            str(user_id), str(generation_id)
        ):
            raise
    deadline = time.monotonic() + services.settings.projection_grace_s
    while True:
        await asyncio.sleep(POLL_S)
        try:
            return await _gallery_get(services, user_id, generation_id)
        except NotFound:
            if time.monotonic() >= deadline:
                raise


async def wait_terminal(
    services: Services, watch: TerminalWatch, *, user_id: uuid.UUID, generation_id: uuid.UUID, timeout: float
) -> GenerationRecord | None:
    """The generation once terminal (within ``timeout``), else its latest state (None when
    the gallery has not projected it yet)."""
    deadline = time.monotonic() + timeout
    ended = await watch.wait(generation_id, timeout)
    # The gallery projects the terminal event a moment after it was published.
    horizon = max(deadline, time.monotonic() + services.settings.projection_grace_s) if ended else deadline
    latest: GenerationRecord | None = None
    while True:
        try:
            latest = await _gallery_get(services, user_id, generation_id)
        except NotFound:
            pass
        if latest is not None and is_terminal(latest.status):
            return latest
        if time.monotonic() >= horizon:
            return latest
        await asyncio.sleep(POLL_S)


async def cancel(services: Services, *, user_id: uuid.UUID, generation_id: uuid.UUID) -> GenerationRecord:
    """Ask the generation worker to stop (queued jobs never run, running ones are interrupted);
    billing refunds the hold when ``generation.canceled`` follows."""
    found = await get(services, user_id=user_id, generation_id=generation_id)
    if found.status == GenerationStatus.CANCELED:
        return found
    if is_terminal(found.status):
        raise Conflict(f"the generation already {found.status.value}", generation_status=found.status.value)
    event = make_event(
        GenerationCancelRequested(user_id=user_id, generation_id=generation_id),
        source=SOURCE,
        subject=generation_id,
        event_id=transition_event_id(generation_id, "cancel_requested"),
    )
    await publish_event(services.broker, event, stream=GENERATION)
    return found
