"""``python -m gallery rebuild``: replay the streams from their start into a fresh schema and swap
it in, without downtime for readers.

1. Create ``gallery_next`` (the tables of ``models.py``, stamped at the Alembic head).
2. Replay IDENTITY, GENERATION, BILLING and GALLERY up to their current last sequence into it,
   through the same ``projection.apply`` and inbox the live consumers use. Nobody waits.
3. Swap, in one transaction: take the writer lock exclusively (consumers, commands and the
   purger hold it shared, so they finish what they are doing and then wait), replay what
   arrived meanwhile, carry over the outbox events not yet relayed (applied to the new model
   too: they are not in the stream yet), then rename ``gallery`` away and ``gallery_next`` to
   ``gallery``. Readers never wait: a query started before the swap finishes on the old
   tables, the next one resolves ``gallery.*`` to the new ones (PostgreSQL re-plans prepared
   statements when a schema is renamed).
4. Drop the previous schema (``--keep-previous`` keeps it as ``gallery_prev_<time>``).

The live consumers keep their JetStream positions: whatever they receive after the swap
that the rebuild already applied is in the new inbox and is skipped. A rebuild needs the
streams to hold every event (the default limits retention keeps everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from alembic.script import ScriptDirectory
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from genimage_common.database import SessionMaker, claim_event, make_engine, make_sessionmaker
from genimage_common.events import Event, UnknownEventType, parse_event
from genimage_common.logging import configure_logging
from genimage_common.streams import BILLING, GALLERY, GENERATION, IDENTITY, SUBJECTS

from . import projection
from .models import SCHEMA, metadata, processed_events
from .settings import GallerySettings

log = logging.getLogger(__name__)

NEXT = f"{SCHEMA}_next"
# Replayed in this order: fewer stubs (requests before outputs, images before their flags).
STREAMS = (IDENTITY, GENERATION, BILLING, GALLERY)
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Report:
    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    skipped: int = 0  # events that cannot be decoded or applied (also dead-lettered live)
    carried_over: int = 0  # outbox events not yet relayed at the swap
    previous_schema: str | None = None
    seconds: float = 0.0


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unexpected schema name {name!r}")
    return f'"{name}"'


async def _head_revision(engine: AsyncEngine) -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    async with engine.connect() as conn:
        live = await conn.scalar(text(f"SELECT version_num FROM {_ident(SCHEMA)}.alembic_version"))  # noqa: S608
    if live != head:
        raise SystemExit(f"{SCHEMA} is at revision {live}, not {head}: run `python -m gallery migrate` first")
    assert head is not None
    return head


async def create_schema(engine: AsyncEngine, schema: str, revision: str) -> None:
    """A fresh, empty copy of the read model's tables in ``schema``, stamped at ``revision``."""
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE"))
        await conn.execute(text(f"CREATE SCHEMA {_ident(schema)}"))
        translated = await conn.execution_options(schema_translate_map={SCHEMA: schema})
        await translated.run_sync(metadata.create_all)
        await conn.execute(
            text(
                f"CREATE TABLE {_ident(schema)}.alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        stamp = f"INSERT INTO {_ident(schema)}.alembic_version VALUES (:v)"  # noqa: S608
        await conn.execute(text(stamp), {"v": revision})


async def apply_events(session: AsyncSession, stream: str, events: list[Event[Any]]) -> int:
    """Claim and apply ``events`` (already projected ones are skipped); returns how many applied."""
    applied = 0
    for event in events:
        if await claim_event(session, processed_events, event_id=event.id, consumer=projection.INBOX[stream]):
            await projection.apply(session, event)
            applied += 1
    return applied


class Replayer:
    """Reads a stream from a sequence with an ephemeral, unacknowledged pull consumer."""

    def __init__(self, js: JetStreamContext, batch: int) -> None:
        self._js = js
        self._batch = batch

    async def last_seq(self, stream: str) -> int:
        return int((await self._js.stream_info(stream)).state.last_seq)

    async def batches(self, stream: str, start: int, upto: int):  # type: ignore[no-untyped-def]
        """Yield lists of decoded, projected events with sequence in ``[start, upto]``."""
        if upto < start:
            return
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            max_waiting=1,
        )
        sub = await self._js.pull_subscribe(SUBJECTS[stream][0], stream=stream, config=config)
        try:
            seq = start - 1
            while seq < upto:
                try:
                    msgs = await sub.fetch(self._batch, timeout=5)
                except NatsTimeout:
                    break  # the rest up to `upto` was removed from the stream
                batch: list[Event[Any]] = []
                skipped = 0
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq > upto:
                        break
                    try:
                        event = parse_event(msg.data)
                    except (UnknownEventType, ValidationError, ValueError):
                        skipped += 1
                        continue
                    if projection.projects(event):
                        batch.append(event)
                yield batch, skipped
        finally:
            await sub.unsubscribe()


class Rebuild:
    def __init__(self, settings: GallerySettings, *, keep_previous: bool = False) -> None:
        self.settings = settings
        self.keep_previous = keep_previous
        self.report = Report()

    async def run(self) -> Report:
        started = time.monotonic()
        engine = make_engine(self.settings.database_url, pool_size=2)
        nc = await nats.connect(self.settings.nats_url)
        try:
            replayer = Replayer(nc.jetstream(), self.settings.rebuild_batch)
            await create_schema(engine, NEXT, await _head_revision(engine))
            sessions = make_sessionmaker(engine.execution_options(schema_translate_map={SCHEMA: NEXT}))
            heads = {s: await replayer.last_seq(s) for s in STREAMS}
            for stream in STREAMS:
                await self._replay(sessions, replayer, stream, 1, heads[stream])
            log.info("replayed up to the heads, swapping", extra={"heads": heads})
            previous = f"{SCHEMA}_prev_{datetime.now(UTC):%Y%m%d%H%M%S}"
            await self._swap(sessions, replayer, heads, previous)
            kept = self.keep_previous or not await self._drop(engine, previous)
            self.report.previous_schema = previous if kept else None
        finally:
            await nc.close()
            await engine.dispose()
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    async def _replay(self, sessions: SessionMaker, replayer: Replayer, stream: str, start: int, upto: int) -> None:
        async for events, skipped in replayer.batches(stream, start, upto):
            self.report.skipped += skipped
            try:
                async with sessions.begin() as session:
                    self.report.applied[stream] += await apply_events(session, stream, events)
            except Exception:
                # One bad event must not hide the others: apply this batch one by one.
                for event in events:
                    try:
                        async with sessions.begin() as session:
                            self.report.applied[stream] += await apply_events(session, stream, [event])
                    except Exception:
                        log.exception("event not applied", extra={"event_id": str(event.id), "stream": stream})
                        self.report.skipped += 1

    async def _swap(self, sessions: SessionMaker, replayer: Replayer, heads: dict[str, int], previous: str) -> None:
        async with sessions.begin() as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": projection.WRITER_LOCK})
            for stream in STREAMS:
                head = await replayer.last_seq(stream)
                async for events, skipped in replayer.batches(stream, heads[stream] + 1, head):
                    self.report.skipped += skipped
                    self.report.applied[stream] += await apply_events(session, stream, events)
            # Schema names are constants (and checked by _ident), never input.
            unpublished = f"FROM {_ident(SCHEMA)}.outbox WHERE published_at IS NULL ORDER BY seq"
            pending = (await session.execute(text(f"SELECT stream, payload {unpublished}"))).all()
            for row in pending:
                stream = row.stream if row.stream in projection.INBOX else GALLERY
                await apply_events(session, stream, [parse_event(row.payload)])
            columns = "event_id, subject, stream, payload, headers, created_at"
            carry = f"INSERT INTO {_ident(NEXT)}.outbox ({columns}) SELECT {columns} {unpublished}"
            await session.execute(text(carry))
            self.report.carried_over = len(pending)
            await session.execute(text(f"ALTER SCHEMA {_ident(SCHEMA)} RENAME TO {_ident(previous)}"))
            await session.execute(text(f"ALTER SCHEMA {_ident(NEXT)} RENAME TO {_ident(SCHEMA)}"))
        log.info("rebuilt read model swapped in", extra={"previous": previous})

    async def _drop(self, engine: AsyncEngine, schema: str) -> bool:
        # Waits for queries still running on the old tables; gives up (and says so) after a while.
        for _ in range(6):
            try:
                async with engine.begin() as conn:
                    await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                    await conn.execute(text(f"DROP SCHEMA {_ident(schema)} CASCADE"))
                return True
            except Exception:
                log.warning("previous schema still in use, retrying the drop", extra={"schema": schema})
        log.error("previous schema left in place; drop it by hand", extra={"schema": schema})
        return False


def main(settings: GallerySettings, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m gallery rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--keep-previous", action="store_true", help="keep the replaced schema as gallery_prev_*")
    args = parser.parse_args(argv)
    configure_logging("gallery", settings.log_level)
    report = asyncio.run(Rebuild(settings, keep_previous=args.keep_previous).run())
    print(json.dumps(report.__dict__))
