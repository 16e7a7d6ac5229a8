"""Consuming ``generation.requested``: a durable JetStream pull consumer, bounded concurrency.

A message is fetched only when a job slot is free, so nothing waits in a local buffer while
its ack deadline runs out (and other replicas could have taken it). While a job runs, an
in-progress ack every third of ``ack_wait`` keeps JetStream from redelivering it. Then, by the
shared redelivery policy (``genimage_common.redelivery``), carried out by the same routine as
every other consumer's (``genimage_common.delivery.handle_failure``):

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
  another replica;
- a delivery of a job this replica is already running (JetStream redelivered it because the
  in-progress acks failed, e.g. while NATS restarted): it never starts a second run (two runs
  would upload twice and publish progress after the outcome). It is attached to the running
  job: the heartbeat marks it in progress with the first, and it is settled with the first's
  verdict when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError
from opentelemetry import propagate, trace
from pydantic import ValidationError

from genimage_common.delivery import Verdict, handle_failure
from genimage_common.events import Event, GenerationRequested, UnknownEventType, parse_event
from genimage_common.logging import log_context
from genimage_common.messaging import durable
from genimage_common.redelivery import Failure, Probe, classify
from genimage_common.streams import GENERATION
from genimage_common.subjects import any_user

from .context import JobContext
from .jobs import fail, run_job
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
        # The jobs this replica runs, by generation id: the deliveries of each (the first one
        # that runs it, then redeliveries attached to it), all in-progress-acked and settled together.
        self._jobs: dict[uuid.UUID, list[Msg]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sub: Any = None
        self._config: ConsumerConfig | None = None
        self.policy = self.settings.redelivery_policy()

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

    @property
    def generations(self) -> frozenset[uuid.UUID]:
        """The generations this replica is running now."""
        return frozenset(self._jobs)

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

    async def _heartbeat(self, deliveries: list[Msg], generation_id: uuid.UUID) -> None:
        """In-progress acks while the job runs, for each of its deliveries. Also re-reads the
        cancel flag: the KV watch is the fast path to a running job, this is its safety net."""
        interval = max(0.5, self.settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in list(deliveries):
                with contextlib.suppress(Exception):
                    await self._keep_alive(msg)
            with contextlib.suppress(Exception):
                if await self.ctx.state.cancel_requested(generation_id):
                    self.ctx.cancels.cancel(generation_id)

    @staticmethod
    async def _keep_alive(msg: Msg) -> None:
        await msg.in_progress()

    async def _handle(self, msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except Poison as exc:
            await self._settle(msg, await self._failed(msg, exc, failure=Failure.POISON))
            return
        gid = event.data.generation_id
        running = self._jobs.get(gid)
        if running is not None:
            # Redelivered while it runs here: one run only. Mark it in progress at once (the
            # next heartbeat may be a while away); its slot is free again when we return.
            running.append(msg)
            with contextlib.suppress(Exception):
                await self._keep_alive(msg)
            with log_context(generation_id=str(gid)):
                log.warning(
                    "job redelivered while it runs here, attached to the running job",
                    extra={"delivered": msg.metadata.num_delivered},
                )
            return
        deliveries = [msg]
        self._jobs[gid] = deliveries
        heartbeat = asyncio.create_task(self._heartbeat(deliveries, gid))
        JOBS_RUNNING.inc()
        parent = propagate.extract(dict(msg.headers or {}))
        try:
            with tracer.start_as_current_span(
                "generation.requested process", context=parent, kind=trace.SpanKind.CONSUMER
            ):
                verdict = await self._process(msg, event)
            # Released before settling (no await in between): a delivery arriving from now on
            # runs on its own and finds the outcome recorded (or retries a job handed back).
            self._release(gid, deliveries)
            for delivery in deliveries:
                await self._settle(delivery, verdict)
        except asyncio.CancelledError:
            # Shutdown: hand the job back now rather than after ack_wait.
            self._release(gid, deliveries)
            for delivery in deliveries:
                with contextlib.suppress(Exception):
                    await delivery.nak()
            raise
        finally:
            self._release(gid, deliveries)
            heartbeat.cancel()
            JOBS_RUNNING.dec()

    def _release(self, generation_id: uuid.UUID, deliveries: list[Msg]) -> None:
        if self._jobs.get(generation_id) is deliveries:
            del self._jobs[generation_id]

    async def _process(self, msg: Msg, event: Event[GenerationRequested]) -> Verdict | None:
        """Run the job; None when it is done (whatever its outcome), else what to do with it."""
        gid = event.data.generation_id
        delivered = msg.metadata.num_delivered
        try:
            transient = await self.ctx.state.transient_failures(gid)
        except Exception as exc:
            # The state bucket is on NATS: without it nothing can be decided (nor published).
            return await self._failed(msg, exc, event=event, failure=Failure.TRANSIENT)
        if delivered - transient > self.settings.max_deliveries:
            with log_context(generation_id=str(gid)):
                log.error("job keeps killing its worker, giving up", extra={"delivered": delivered})
            exc = RuntimeError("delivered too often")
            return await self._failed(msg, exc, event=event, failure=Failure.CONTENT, transient=transient)
        try:
            await run_job(self.ctx, event, attempt=delivered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = await classify(exc, self._probes())
            if failure is Failure.POISON:
                # The message decoded: what failed to parse came from elsewhere (a stored manifest).
                failure = Failure.CONTENT
            return await self._failed(msg, exc, event=event, failure=failure, transient=transient)
        return None

    async def _failed(
        self,
        msg: Msg,
        exc: BaseException,
        *,
        failure: Failure,
        event: Event[GenerationRequested] | None = None,
        transient: int = 0,
    ) -> Verdict:
        """The shared redelivery policy, with the job's own bookkeeping: transient failures are
        counted per generation in the state bucket (every replica sees them), and a job given up
        fails with ``internal_error`` before its message goes to the DLQ."""

        async def count_transient() -> None:
            if event is not None:
                await self.ctx.state.record_transient_failure(event.data.generation_id)

        async def give_up() -> None:
            if event is not None:
                log.error("job failed on its last delivery", exc_info=exc, extra={"failure": failure.value})
                delivered = msg.metadata.num_delivered
                await fail(self.ctx, event.data, "internal_error", "the job could not be run", attempt=delivered)

        with log_context(generation_id=str(event.data.generation_id) if event is not None else None):
            return await handle_failure(
                self.js,
                msg,
                exc,
                policy=self.policy,
                failure=failure,
                transient_before=transient,
                on_transient=count_transient,
                before_dead_letter=give_up,
            )

    @staticmethod
    async def _settle(msg: Msg, verdict: Verdict | None) -> None:
        """Ack a finished job, term a dead-lettered message, nak one to be delivered again. A
        failed ack or nak is harmless: the message comes back after ack_wait (a finished job then
        only re-publishes its outcome)."""
        try:
            if verdict is None:
                await msg.ack()
            elif verdict.terminate:
                await msg.term()
            else:
                await msg.nak(delay=verdict.delay_s)
        except Exception as exc:
            log.warning("acknowledging a job message failed", extra={"error": repr(exc)})


def documentation(servers: str) -> NatsBroker:
    """The intake as a FastStream subscriber declaration, for the worker's AsyncAPI document
    only: this broker is never connected (``JobIntake`` consumes with its own fetch loop)."""
    docs = NatsBroker(servers)

    @docs.subscriber(
        any_user(GenerationRequested.name),
        **durable(GENERATION, DURABLE, batch=1),
        description="The job queue: one job per message, fetched only when a slot is free (bounded "
        "concurrency), acked once its outcome is published; see the module doc of generation.intake",
    )
    async def generation_requested(event: Event[GenerationRequested]) -> None:
        raise NotImplementedError  # documentation only

    return docs
