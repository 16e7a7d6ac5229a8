"""Transactional outbox: an event is written in the transaction that makes the change, then
relayed to JetStream and marked published only after the publish is acknowledged.

One relay is active per service at a time (a PostgreSQL advisory lock), so events leave
in the order they were written, whatever the number of replicas; a crash between publish
and mark re-publishes with the same ``Nats-Msg-Id`` and JetStream drops the duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession

from .database import SessionMaker, utc_column
from .events import Event
from .messaging import JSON
from .outage import Outage
from .settings import CommonSettings
from .telemetry import trace_headers
from .unit_of_work import note_outbox_write

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", PgUUID(as_uuid=True), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("stream", String(64), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False),
        utc_column("created_at"),
        utc_column("published_at", nullable=True, default_now=False),
    )


async def enqueue(session: AsyncSession, table: Table, event: Event[Any], *, stream: str) -> None:
    """Add ``event`` to the outbox inside the caller's transaction (idempotent by event id); the
    unit of work wakes the relay once that transaction commits."""
    await session.execute(
        insert(table)
        .values(
            event_id=event.id,
            subject=event.nats_subject,
            stream=stream,
            payload=event.model_dump(mode="json"),
            headers=trace_headers(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    note_outbox_write(session)


class OutboxRelay:
    """Publishes pending outbox rows in order; ``wake()`` after a commit for low latency.

    While PostgreSQL or NATS is away the rows stay pending; the relay backs off (``outage``:
    the shared ``TRANSIENT_RETRY_*`` pacing unless given) and logs the outage once per backoff
    step, not a stack trace per poll. A ``wake()`` (a commit) still starts a round at once, so
    that the relay resumes as soon as the database is back.
    """

    def __init__(
        self,
        sessions: SessionMaker,
        table: Table,
        js: JetStreamContext,
        *,
        service: str,
        batch: int = 100,
        poll_interval_s: float = 0.5,
        registry: CollectorRegistry = REGISTRY,
        outage: Outage | None = None,
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._js = js
        self._lock_key = f"outbox:{service}"
        self._batch = batch
        self._poll = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.outage = outage or Outage.from_settings("outbox relay", log, CommonSettings())
        self.backlog = Gauge(
            "genimage_outbox_backlog",
            "Outbox events written but not yet published",
            ["service"],
            registry=registry,
        ).labels(service=service)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop relaying; bounded, so a publish or rollback stuck on a dead connection cannot
        hold up the service's shutdown (unpublished rows stay pending for the next relay)."""
        if self._task:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                log.warning("outbox relay did not stop in time", extra={"timeout_s": timeout_s})

    async def _run(self) -> None:
        while True:
            pause = self._poll
            try:
                published = await self.relay_once()
                self.outage.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NATS or PostgreSQL away: the rows stay pending and are retried after a pause
                # that grows while it lasts; another failure is logged with its traceback.
                pause = self.outage.failed(exc, interval=self._poll)
                published = 0
            if published < self._batch:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                except TimeoutError:
                    pass

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        t = self._table
        async with self._sessions() as session, session.begin():
            got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": self._lock_key})
            if not got:
                return 0
            rows = (
                await session.execute(
                    select(t.c.seq, t.c.event_id, t.c.subject, t.c.stream, t.c.payload, t.c.headers)
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.seq)
                    .limit(self._batch)
                )
            ).all()
            for row in rows:
                headers = {**row.headers, "Nats-Msg-Id": str(row.event_id), **JSON}
                await self._js.publish(
                    row.subject, json.dumps(row.payload).encode(), stream=row.stream, headers=headers
                )
            if rows:
                await session.execute(
                    update(t).where(t.c.seq.in_([r.seq for r in rows])).values(published_at=func.now())
                )
            pending = await session.scalar(select(func.count()).select_from(t).where(t.c.published_at.is_(None)))
            self.backlog.set(max((pending or 0) - len(rows), 0))
            return len(rows)
