"""The outbox relay through a PostgreSQL outage (the session's real server behind a proxy that
is switched off): it backs off, logs one line per backoff step without a stack trace and one
"recovered" line, and publishes what was written meanwhile; a failure of its own (not a
dependency) keeps its traceback. Also ``Outage`` itself on a fake clock."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry
from sqlalchemy import MetaData, Table, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.errors import Conflict
from genimage_common.events import CreditsGranted, make_event
from genimage_common.outage import Outage, root_cause
from genimage_common.outbox import OutboxRelay, enqueue, outbox_table
from tests.polling import eventually_async

from .outage_proxy import OutageProxy

pytestmark = pytest.mark.timeout(90)

BASE_S = 0.2
MAX_S = 1.6
STEPS = (0.2, 0.4, 0.8, 1.6)  # the pauses until the cap: one line each


class Records(logging.Handler):
    """The records of one logger, kept for assertions."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logger
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        self._level = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


# --- Outage on a fake clock ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused() -> Exception:
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError as inner:
        try:
            raise RuntimeError("could not run the round") from inner
        except RuntimeError as outer:
            return outer


def test_an_outage_is_one_line_per_backoff_step_and_one_when_it_ends() -> None:
    log = logging.getLogger(f"tests.outage.{uuid.uuid4().hex}")
    clock = Clock()
    outage = Outage("loop", log, base_s=0.5, max_s=30, remind_s=600, clock=clock)
    with Records(log) as got:
        pauses = []
        # A 30 s outage at production pacing, then 30 minutes more at the cap.
        while clock.now < 1000 + 30 * 60:
            pauses.append(outage.failed(refused(), interval=0.5))
            clock.now += pauses[-1]
        assert pauses[:8] == [0.5, 1, 2, 4, 8, 16, 30, 30]
        assert set(pauses[7:]) == {30}
        outage.succeeded()
        outage.succeeded()  # no outage: nothing to say
    lines = got.messages()
    # The start, 6 steps (1 ... 30 s), a reminder every 10 minutes at the cap, the end.
    assert lines[0] == "loop: dependency unavailable, backing off"
    assert lines.count("loop: dependency still unavailable, backing off further") == 6
    assert lines.count("loop: dependency still unavailable") == 2
    assert lines[-1] == "loop: dependency recovered"
    assert len(lines) == 10, lines
    assert not any(r.exc_info for r in got.records)
    assert got.records[0].error == "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)"
    assert got.records[-1].failed_rounds == len(pauses)
    assert not outage.active


def test_a_slow_loop_never_retries_faster_than_its_interval() -> None:
    log = logging.getLogger(f"tests.outage.{uuid.uuid4().hex}")
    outage = Outage("purge", log, base_s=0.5, max_s=30, clock=Clock())
    with Records(log) as got:
        assert {outage.failed(refused(), interval=60) for _ in range(20)} == {60}
    assert got.messages() == ["purge: dependency unavailable, backing off"]


def test_a_failure_of_its_own_keeps_its_traceback_and_pace() -> None:
    log = logging.getLogger(f"tests.outage.{uuid.uuid4().hex}")
    outage = Outage("loop", log, base_s=0.5, max_s=30, clock=Clock())
    with Records(log) as got:
        for exc in (KeyError("seq"), Conflict("already recorded")):
            try:
                raise exc
            except Exception as raised:
                assert outage.failed(raised, interval=0.5) == 0.5
    assert [r.levelno for r in got.records] == [logging.ERROR, logging.ERROR]
    assert all(r.exc_info and r.exc_info[1] is not None for r in got.records)
    assert not outage.active


def test_the_error_named_is_the_innermost_that_says_something() -> None:
    assert root_cause(refused()).startswith("ConnectionRefusedError: [Errno 111]")
    try:
        try:
            raise TimeoutError()
        except TimeoutError as empty:
            raise OSError("nats: timeout") from empty
    except OSError as exc:
        assert root_cause(exc) == "OSError: nats: timeout"


# --- the relay through a real outage ------------------------------------------------------------


@dataclass
class Setup:
    direct: AsyncEngine
    proxied: AsyncEngine
    proxy: OutageProxy
    table: Table
    js: JetStreamContext
    stream: str
    subject: str

    async def write(self, count: int, *, stream: str | None = None) -> None:
        """Rows written by a transaction the relay did not see (through the direct engine)."""
        async with make_sessionmaker(self.direct)() as session, session.begin():
            for _ in range(count):
                event = make_event(
                    CreditsGranted(user_id=uuid.uuid4(), amount=1, reason="signup", reference="t", balance=1),
                    source="tests",
                    subject=uuid.uuid4(),
                )
                await enqueue(session, self.table, event, stream=stream or self.stream)
            # To this test's own subject, in the same transaction (the relay publishes a row
            # to its subject, and must never see the row with its original one).
            t = self.table
            await session.execute(update(t).where(t.c.published_at.is_(None)).values(subject=f"{self.subject}.granted"))

    async def published(self) -> int:
        return (await self.js.stream_info(self.stream)).state.messages

    async def published_is(self, count: int) -> bool:
        return await self.published() == count

    def relay(self, log_name: str) -> OutboxRelay:
        return OutboxRelay(
            make_sessionmaker(self.proxied),
            self.table,
            self.js,
            service=f"outage-test-{uuid.uuid4().hex[:8]}",
            poll_interval_s=0.1,
            registry=CollectorRegistry(),
            outage=Outage("outbox relay", logging.getLogger(log_name), base_s=BASE_S, max_s=MAX_S),
        )


@pytest.fixture()
async def setup(stack_env: dict[str, str]) -> AsyncIterator[Setup]:
    tag = uuid.uuid4().hex[:10]
    schema, stream, subject = f"outbox_t_{tag}", f"OUTAGE_{tag.upper()}", f"outage_{tag}"
    url = make_url(stack_env["DATABASE_URL"])
    direct = make_engine(stack_env["DATABASE_URL"], pool_size=2)
    proxy = await OutageProxy(url.port or 5432, url.host or "127.0.0.1").start()
    proxied = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), pool_size=2)
    table = outbox_table(MetaData(schema=schema))
    async with direct.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(table.metadata.create_all)
    nc = await nats.connect(stack_env["NATS_URL"])
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    try:
        yield Setup(direct, proxied, proxy, table, js, stream, subject)
    finally:
        await proxy.stop()
        await proxied.dispose()
        async with direct.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await direct.dispose()
        await js.delete_stream(stream)
        await nc.close()


async def test_the_relay_backs_off_through_a_database_outage_and_says_when_it_is_back(setup: Setup) -> None:
    log_name = f"tests.relay.{uuid.uuid4().hex}"
    relay = setup.relay(log_name)
    with Records(logging.getLogger(log_name)) as got:
        relay.start()
        try:
            await setup.write(1)
            relay.wake()
            await eventually_async(lambda: setup.published_is(1), timeout=10, what="the first row published")

            await setup.proxy.down()
            started = time.monotonic()
            await setup.write(3)  # pending while the relay cannot reach the database
            # Past the cap: rounds at 0, 0.2, 0.6, 1.4, 3.0, 4.6 s (a stack trace each, before).
            await eventually_async(lambda: relay.outage.failures >= 6, timeout=20, what="six failed rounds")
            failed_rounds = relay.outage.failures
            outage_s = time.monotonic() - started
            assert await setup.published() == 1

            await setup.proxy.up()
            back = time.monotonic()
            await eventually_async(lambda: setup.published_is(4), timeout=MAX_S + 5, what="the pending rows published")
            recovered_in = time.monotonic() - back
            assert relay.outage.failures == 0
        finally:
            await relay.stop()
    lines = got.messages()
    assert lines[0] == "outbox relay: dependency unavailable, backing off", lines
    assert lines.count("outbox relay: dependency still unavailable, backing off further") == len(STEPS) - 1
    assert lines[-1] == "outbox relay: dependency recovered"
    assert len(lines) == len(STEPS) + 1, lines
    assert not any(r.exc_info for r in got.records), "a dependency away is not a stack trace"
    assert got.records[-1].failed_rounds >= failed_rounds
    # The backoff never waits more than its cap once the database is back.
    assert recovered_in < MAX_S + 1.5, recovered_in
    print(f"outage {outage_s:.1f}s: {failed_rounds} failed rounds, {len(lines)} log lines; back in {recovered_in:.2f}s")


async def test_a_failure_of_the_relay_s_own_keeps_its_traceback(setup: Setup) -> None:
    log_name = f"tests.relay.{uuid.uuid4().hex}"
    relay = setup.relay(log_name)
    # A row naming a stream its subject is not in: JetStream refuses it (400), every round,
    # while PostgreSQL and NATS both answer.
    await setup.write(1, stream=f"NOT_{setup.stream}")
    with Records(logging.getLogger(log_name)) as got:
        relay.start()
        try:
            await eventually_async(lambda: len(got.records) >= 3, timeout=10, what="three failed rounds")
            assert relay.outage.failures == 0
            async with setup.direct.begin() as conn:
                await conn.execute(update(setup.table).values(stream=setup.stream))
            await eventually_async(lambda: setup.published_is(1), timeout=10, what="published once repaired")
        finally:
            await relay.stop()
    failures = [r for r in got.records if r.levelno >= logging.WARNING]
    assert failures and all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    assert all(r.getMessage() == "outbox relay: round failed" for r in failures)
