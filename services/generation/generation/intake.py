"""Consuming ``generation.requested``: a durable JetStream pull consumer, bounded concurrency.

A message is fetched only when a job slot is free, so nothing waits in a local buffer while
its ack deadline runs out (and other replicas could have taken it). While a job runs, an
in-progress ack every third of ``ack_wait`` keeps JetStream from redelivering it. Then, by the
shared redelivery policy (``genimage_common.redelivery``):

- done (completed, failed or canceled — those are outcomes, not errors): ack;
- a dependency away (object storage, NATS): nak with capped exponential backoff, for as long as
  it lasts (up to the long ``TRANSIENT_RETRY_CEILING_S``); these deliveries are counted in the
  state bucket and never count against the job's bound;
- any other unexpected failure (a corrupt manifest, a bug): nak with backoff, up to
  ``max_deliveries`` deliveries; then the job fails with ``internal_error`` and the message goes
  to the ``DLQ`` stream;
- a message that cannot be decoded: DLQ at once (no retry can fix it), never blocking others;
- a message delivered more than ``max_deliveries`` times, not counting transient failures (each
  attempt killed its worker): the job fails and the message is dead-lettered without running;
- shutdown: running jobs get ``shutdown_grace_s``, then they are handed back (nak) for
  another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError
from opentelemetry import propagate, trace
from pydantic import ValidationError

from genimage_common.events import Event, GenerationRequested, UnknownEventType, parse_event
from genimage_common.logging import log_context
from genimage_common.messaging import dead_letter_message
from genimage_common.redelivery import Failure, Probe, RedeliveryPolicy, classify, is_transient
from genimage_common.streams import GENERATION
from genimage_common.subjects import any_user

from .jobs import JobContext, fail, run_job
from .metrics import JOBS_RUNNING

log = logging.getLogger(__name__)
tracer = trace.get_tracer("genimage.generation")

DURABLE = "generation-requested"


class Poison(ValueError):
    """A message that is not a ``generation.requested`` event."""


def decode(data: bytes) -> Event[GenerationRequested]:
    try:
        event = parse_event(data)
    except (ValidationError, UnknownEventType, ValueError, AttributeError, TypeError) as exc:
        raise Poison(f"undecodable message: {type(exc).__name__}") from exc
    if not isinstance(event.data, GenerationRequested):
        raise Poison(f"unexpected event type {event.type}")
    return event


class JobIntake:
    def __init__(self, ctx: JobContext, js: JetStreamContext) -> None:
        self.ctx = ctx
        self.js = js
        self.settings = ctx.settings
        self._slots = asyncio.Semaphore(ctx.settings.concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sub: Any = None
        self._config: ConsumerConfig | None = None
        self.policy = RedeliveryPolicy.from_settings(
            self.settings, max_deliver=self.settings.max_deliveries, backoff_s=tuple(self.settings.redelivery_backoff_s)
        )

    def _probes(self) -> dict[str, Probe]:
        """What a job depends on: an unclassified failure while one is down is transient."""

        async def nats() -> None:
            if not self.ctx.broker.connection or not self.ctx.broker.connection.is_connected:
                raise ConnectionError("NATS is not connected")

        return {"nats": nats, "s3": self.ctx.store.ping}

    async def start(self) -> None:
        config = ConsumerConfig(
            name=DURABLE,
            durable_name=DURABLE,
            filter_subject=any_user(GenerationRequested.name),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_s,
            # Bounded by us (see the module doc): the server must keep redelivering so a job that
            # kills its workers is seen one last time and dead-lettered.
            max_deliver=-1,
            max_ack_pending=-1,
        )
        self._config = config
        await self._bind()
        self._loop_task = asyncio.create_task(self._fetch_loop(), name="generation-intake")
        log.info("consuming generation requests", extra={"concurrency": self.settings.concurrency})

    async def _bind(self) -> None:
        # Creates the consumer, or updates an existing one to this configuration.
        await self.js.add_consumer(GENERATION, config=self._config)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._sub = await self.js.pull_subscribe_bind(durable=DURABLE, stream=GENERATION)

    async def check(self) -> None:
        """Readiness: the fetch loop is alive."""
        if self._loop_task is None or self._loop_task.done():
            raise RuntimeError("the generation intake is not running")

    async def stop(self) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    @property
    def running(self) -> int:
        return len(self._running)

    async def _fetch_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            try:
                msgs = await self._sub.fetch(1, timeout=1.0)
            except NatsTimeoutError:
                self._slots.release()
                continue
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:
                # NATS restarting, the consumer deleted by hand...: keep trying, never die silently.
                self._slots.release()
                log.warning("fetch failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
                if not isinstance(exc, ConnectionClosedError | ServiceUnavailableError):
                    with contextlib.suppress(Exception):
                        await self._bind()
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self._running.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("job handler crashed", exc_info=task.exception())

    async def _heartbeat(self, msg: Msg, generation_id: uuid.UUID) -> None:
        """In-progress acks while the job runs. Also re-reads the cancel flag: the KV watch is
        the fast path to a running job, this is its safety net."""
        interval = max(0.5, self.settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()
            with contextlib.suppress(Exception):
                if await self.ctx.state.cancel_requested(generation_id):
                    self.ctx.cancels.cancel(generation_id)

    async def _handle(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered
        try:
            event = decode(msg.data)
        except Poison as exc:
            await self._dead_letter(msg, exc, delivered, Failure.POISON)
            return
        heartbeat = asyncio.create_task(self._heartbeat(msg, event.data.generation_id))
        JOBS_RUNNING.inc()
        parent = propagate.extract(dict(msg.headers or {}))
        try:
            with tracer.start_as_current_span(
                "generation.requested process", context=parent, kind=trace.SpanKind.CONSUMER
            ):
                await self._process(msg, event, delivered)
        except asyncio.CancelledError:
            # Shutdown: hand the job back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        finally:
            heartbeat.cancel()
            JOBS_RUNNING.dec()

    async def _process(self, msg: Msg, event: Event[GenerationRequested], delivered: int) -> None:
        gid = event.data.generation_id
        try:
            transient = await self.ctx.state.transient_failures(gid)
        except Exception as exc:
            # The state bucket is on NATS: without it nothing can be decided (nor published).
            await self._retry(msg, event, Failure.TRANSIENT, exc, delivered, self.policy.transient_delay(1))
            return
        if delivered - transient > self.settings.max_deliveries:
            with log_context(generation_id=str(gid)):
                log.error("job keeps killing its worker, giving up", extra={"delivered": delivered})
            await self._give_up(msg, event, RuntimeError("delivered too often"), delivered, Failure.CONTENT)
            return
        try:
            await run_job(self.ctx, event, attempt=delivered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = await classify(exc, self._probes())
            if failure is Failure.POISON:
                # The message decoded: what failed to parse came from elsewhere (a stored manifest).
                failure = Failure.CONTENT
            decision = self.policy.decide(failure, delivered=delivered, transient_before=transient)
            if failure is Failure.TRANSIENT:
                with contextlib.suppress(Exception):
                    await self.ctx.state.record_transient_failure(gid)
            if decision.dead_letter:
                with log_context(generation_id=str(gid)):
                    log.error("job failed on its last delivery", exc_info=exc, extra={"failure": failure.value})
                await self._give_up(msg, event, exc, delivered, failure)
                return
            await self._retry(msg, event, failure, exc, delivered, decision.delay_s)
            return
        try:
            await msg.ack()
        except Exception as exc:
            # The outcome is recorded and published: a redelivery only re-publishes it.
            log.warning("ack failed; the job will be redelivered and settle at once", extra={"error": repr(exc)})

    async def _retry(
        self,
        msg: Msg,
        event: Event[GenerationRequested],
        failure: Failure,
        exc: BaseException,
        delivered: int,
        delay: float,
    ) -> None:
        extra = {
            "generation_id": str(event.data.generation_id),
            "delivered": delivered,
            "failure": failure.value,
            "delay_s": delay,
            "error": repr(exc)[:500],
        }
        if failure is Failure.TRANSIENT:
            log.warning("job could not run: dependency unavailable, will be redelivered", extra=extra)
        else:
            log.warning("job failed unexpectedly, will be redelivered", extra=extra, exc_info=exc)
        try:
            await msg.nak(delay=delay)
        except Exception as nak_exc:
            # NATS away: the message comes back after ack_wait anyway.
            log.warning("nak failed", extra={"error": repr(nak_exc)})

    async def _give_up(
        self, msg: Msg, event: Event[GenerationRequested], exc: BaseException, delivered: int, failure: Failure
    ) -> None:
        """The job fails with ``internal_error`` and the message goes to the DLQ; if the outcome
        cannot be published now (NATS away), the message is kept for a later delivery instead."""
        with log_context(generation_id=str(event.data.generation_id)):
            try:
                await fail(self.ctx, event.data, "internal_error", "the job could not be run", attempt=delivered)
            except Exception as fail_exc:
                if is_transient(fail_exc):
                    delay = self.policy.transient_delay(1)
                    await self._retry(msg, event, Failure.TRANSIENT, fail_exc, delivered, delay)
                    return
                log.exception("could not record the failure of a job given up")
        await self._dead_letter(msg, exc, delivered, failure)

    async def _dead_letter(
        self, msg: Msg, exc: BaseException, delivered: int, failure: Failure = Failure.CONTENT
    ) -> None:
        try:
            await dead_letter_message(self.js, msg, exc, delivered=delivered, failure=failure.value)
            await msg.term()
        except Exception as dlq_exc:
            log.warning("dead-lettering failed, will retry", extra={"error": repr(dlq_exc)})
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.policy.transient_delay(1))
