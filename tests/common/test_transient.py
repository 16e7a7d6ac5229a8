"""Transient failures are not poison: the classifier on real library exceptions, the policy's
decisions, and the shared middleware on a real NATS server (redelivered while a dependency is
away, however often; dead-lettered only for the message's own failures, after the bound)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
from faststream.nats import JStream, PullSub
from minio.error import S3Error
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy import exc as sa
from urllib3 import HTTPResponse

from genimage_common.database import make_engine, ping
from genimage_common.errors import Conflict, DomainError, InsufficientCredits, NotFound, ServiceUnavailable
from genimage_common.messaging import make_broker, rpc_call, watch_dependencies
from genimage_common.redelivery import Decision, Failure, RedeliveryPolicy, classify, is_transient
from genimage_common.settings import CommonSettings
from genimage_common.streams import DLQ, ensure_streams
from genimage_devstack.processes import NatsServer, free_port
from tests.jetstream import stream_messages
from tests.polling import eventually_async

pytestmark = pytest.mark.timeout(120)


# --- the classifier ---------------------------------------------------------------------------


async def test_a_database_that_does_not_answer_is_transient() -> None:
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere", pool_size=1)
    try:
        with pytest.raises(Exception) as caught:
            await ping(engine)
    finally:
        await engine.dispose()
    assert is_transient(caught.value)
    assert await classify(caught.value) is Failure.TRANSIENT


def test_database_errors_by_kind() -> None:
    shutting_down = asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    closed = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key value")
    for exc in (shutting_down, starting, closed, deadlock):
        assert is_transient(exc), exc
    assert not is_transient(duplicate)

    # As SQLAlchemy hands them over: wrapped, the driver's error as ``orig`` and as the cause.
    def wrapped(cls: type[sa.DBAPIError], orig: Exception, invalidated: bool = False) -> sa.DBAPIError:
        try:
            try:
                raise orig
            except Exception as inner:
                raise cls("SELECT 1", {}, inner, connection_invalidated=invalidated) from inner
        except sa.DBAPIError as outer:
            return outer

    assert is_transient(wrapped(sa.DBAPIError, shutting_down))
    assert is_transient(wrapped(sa.DBAPIError, RuntimeError("server closed the connection"), invalidated=True))
    assert is_transient(wrapped(sa.OperationalError, RuntimeError("could not connect")))
    assert is_transient(wrapped(sa.InterfaceError, RuntimeError("connection is closed")))
    assert not is_transient(wrapped(sa.IntegrityError, duplicate))
    assert not is_transient(wrapped(sa.ProgrammingError, RuntimeError("syntax error")))
    assert is_transient(sa.TimeoutError("QueuePool limit reached"))


def test_network_nats_and_storage_errors() -> None:
    import nats.errors as ne
    import nats.js.errors as je
    import urllib3.exceptions as u3

    transient = [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError(),
        OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."),
        ne.ConnectionClosedError(),
        ne.NoServersError(),
        ne.NoRespondersError(),
        ne.TimeoutError(),
        je.ServiceUnavailableError(),
        je.NoStreamResponseError(),
        u3.MaxRetryError(None, "/genimage-media", u3.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
        u3.ProtocolError("Connection aborted."),
        S3Error(HTTPResponse(status=503), "SlowDown", "reduce your request rate", "/b/k", "r", "h"),
        S3Error(HTTPResponse(status=500), "InternalError", "oops", "/b/k", "r", "h"),
        ServiceUnavailable("billing is unavailable"),
    ]
    for exc in transient:
        assert is_transient(exc), exc
    content = [
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
        je.BadRequestError(code=400, description="bad"),
        je.NotFoundError(code=404, description="stream not found"),
        S3Error(HTTPResponse(status=404), "NoSuchKey", "no such key", "/b/k", "r", "h"),
        S3Error(HTTPResponse(status=403), "AccessDenied", "denied", "/b/k", "r", "h"),
        NotFound("no such generation"),
        Conflict("other terms"),
        InsufficientCredits(available=1, requested=5),
        RuntimeError("a bug"),
        KeyError("x"),
    ]
    for exc in content:
        assert not is_transient(exc), exc


def test_the_cause_decides() -> None:
    def raised_from(outer: Exception, cause: Exception) -> Exception:
        try:
            raise outer from cause
        except Exception as exc:
            return exc

    assert is_transient(raised_from(RuntimeError("publish failed"), ConnectionResetError()))
    assert not is_transient(raised_from(RuntimeError("publish failed"), ValueError("bad")))
    # A domain error is the message's own, whatever it happened while handling.
    assert not is_transient(raised_from(NotFound("gone"), ConnectionResetError()))
    assert is_transient(ExceptionGroup("tasks", [ValueError("x"), ConnectionRefusedError()]))


async def test_unclassified_failures_are_transient_while_a_dependency_is_down() -> None:
    async def down() -> None:
        raise ConnectionRefusedError()

    async def up() -> None:
        return None

    async def hangs() -> None:
        await asyncio.sleep(60)

    bug = RuntimeError("something odd")
    assert await classify(bug, {"db": up}) is Failure.CONTENT
    assert await classify(bug, {"db": up, "s3": down}) is Failure.TRANSIENT
    assert await classify(NotFound("gone"), {"s3": down}) is Failure.CONTENT  # a domain error is never probed
    started = asyncio.get_running_loop().time()
    from genimage_common.redelivery import dependencies_down

    assert await dependencies_down({"db": hangs}, timeout_s=0.2) == ["db"]
    assert asyncio.get_running_loop().time() - started < 5
    assert await classify(json.JSONDecodeError("x", "doc", 0)) is Failure.POISON


# --- the policy -------------------------------------------------------------------------------


def test_transient_failures_back_off_up_to_a_cap_and_never_count_as_content() -> None:
    policy = RedeliveryPolicy(max_deliver=5, transient_base_s=0.5, transient_max_s=30, transient_ceiling_s=6 * 3600)
    delays = [policy.decide(Failure.TRANSIENT, delivered=n, transient_before=n - 1).delay_s for n in range(1, 12)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    # Hundreds of deliveries while the outage lasts: no dead letter.
    assert not policy.decide(Failure.TRANSIENT, delivered=500, transient_before=499).dead_letter
    # The ceiling: about six hours of capped retries.
    last = policy.transient_deliveries
    assert 6 * 3600 / 30 <= last <= 6 * 3600 / 30 + 10
    assert policy.decide(Failure.TRANSIENT, delivered=last, transient_before=last - 1) == Decision(
        Failure.TRANSIENT, dead_letter=True
    )
    # After 40 transient failures the dependency is back and the message fails on its own:
    # it gets its full bound of content deliveries.
    assert not policy.decide(Failure.CONTENT, delivered=44, transient_before=40).dead_letter
    assert policy.decide(Failure.CONTENT, delivered=45, transient_before=40).dead_letter
    # Content failures alone: bounded, with backoff.
    assert [policy.decide(Failure.CONTENT, delivered=n).dead_letter for n in range(1, 6)] == [False] * 4 + [True]
    assert policy.decide(Failure.POISON, delivered=1).dead_letter


def test_the_policy_follows_the_settings() -> None:
    settings = CommonSettings(transient_retry_base_s=1, transient_retry_max_s=10, transient_retry_ceiling_s=60)
    policy = RedeliveryPolicy.from_settings(settings, max_deliver=3)
    assert (policy.transient_base_s, policy.transient_max_s, policy.transient_ceiling_s) == (1, 10, 60)
    assert policy.max_deliver == 3
    # 1 + 2 + 4 + 8 = 15 s ramp, then 10 s steps up to 60 s: 5 more; the 10th delivery gives up.
    assert policy.transient_deliveries == 10


# --- the middleware on a real NATS ------------------------------------------------------------


class Item(BaseModel):
    id: str


POLICY = RedeliveryPolicy(
    max_deliver=3, backoff_s=(0.05,), transient_base_s=0.02, transient_max_s=0.1, transient_ceiling_s=3600
)


class Harness:
    """A stream of its own, one durable pull subscriber whose handler follows a script per item."""

    def __init__(self, url: str) -> None:
        self.url = url
        tag = uuid.uuid4().hex[:8]
        self.stream, self.prefix, self.durable = f"T{tag}", f"t{tag}", f"test-{tag}"
        self.deliveries: Counter[str] = Counter()
        self.handled: list[str] = []
        self.db_down = False
        self.broker = make_broker(url, service="test", registry=CollectorRegistry(), policy=POLICY)

        async def db() -> None:
            if self.db_down:
                raise ConnectionRefusedError("db down")

        watch_dependencies(self.broker, {"db": db})

        @self.broker.subscriber(
            f"{self.prefix}.>",
            stream=JStream(self.stream, declare=False),
            durable=self.durable,
            pull_sub=PullSub(batch_size=8, timeout=0.2),
        )
        async def handler(item: Item) -> None:
            self.deliveries[item.id] += 1
            n = self.deliveries[item.id]
            kind = item.id.split("-")[0]
            if kind == "outage" and n <= 8:
                raise ConnectionRefusedError(111, "Connect call failed")  # what asyncpg raises
            if kind == "bug":
                raise RuntimeError("a bug that repeats")
            if kind == "odd" and self.db_down:
                raise RuntimeError("an error nobody classified")
            self.handled.append(item.id)

        @self.broker.subscriber(f"rpc.{tag}.echo")
        async def rpc(item: Item) -> dict[str, str]:
            if item.id == "down":
                raise ConnectionRefusedError(111, "Connect call failed")
            if item.id == "bug":
                raise ValueError("a bug in the handler")
            return {"id": item.id}

        self.rpc_subject = f"rpc.{tag}.echo"

    async def __aenter__(self) -> Harness:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await ensure_streams(self.js, CommonSettings())
        await self.js.add_stream(StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"]))
        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()
        await self.nc.close()

    async def publish(self, item_id: str, body: bytes | None = None) -> None:
        data = body if body is not None else json.dumps({"id": item_id}).encode()
        await self.js.publish(f"{self.prefix}.{item_id}", data, stream=self.stream)

    async def dead_letters(self) -> list[nats.aio.msg.Msg]:
        return await stream_messages(self.js, f"dlq.{self.stream}.{self.durable}", DLQ, idle_s=0.3)

    async def settled(self) -> bool:
        info = await self.js.consumer_info(self.stream, self.durable)
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0


@pytest.fixture()
async def harness(private_nats: NatsServer) -> AsyncIterator[Harness]:
    async with Harness(private_nats.url) as h:
        yield h


async def test_a_dependency_outage_is_retried_past_the_bound_and_never_dead_lettered(harness: Harness) -> None:
    await harness.publish("outage-1")
    await eventually_async(lambda: "outage-1" in harness.handled, what="handled once the outage is over")
    # Eight transient failures against a bound of three deliveries, then success.
    assert harness.deliveries["outage-1"] == 9
    await eventually_async(harness.settled, what="acked")
    assert await harness.dead_letters() == []


async def test_a_message_failing_on_its_own_is_dead_lettered_after_the_bound(harness: Harness) -> None:
    await harness.publish("bug-1")
    await harness.publish("fine-1")
    (dead,) = await eventually_async(harness.dead_letters, what="dead-lettered")
    assert dead.headers["Genimage-Dlq-Failure"] == "content"
    assert dead.headers["Genimage-Dlq-Deliveries"] == "3"
    assert json.loads(dead.data) == {"id": "bug-1"}
    assert harness.deliveries["bug-1"] == 3 and "fine-1" in harness.handled  # never blocked the other


async def test_an_undecodable_message_is_dead_lettered_at_once(harness: Harness) -> None:
    await harness.publish("junk", b"\x00 not json")
    (dead,) = await eventually_async(harness.dead_letters, what="dead-lettered")
    assert (dead.headers["Genimage-Dlq-Failure"], dead.headers["Genimage-Dlq-Deliveries"]) == ("poison", "1")


async def test_an_unclassified_failure_while_a_dependency_is_down_is_transient(harness: Harness) -> None:
    harness.db_down = True
    await harness.publish("odd-1")
    await eventually_async(lambda: harness.deliveries["odd-1"] >= 6, what="redelivered past the bound")
    assert await harness.dead_letters() == []
    harness.db_down = False
    await eventually_async(lambda: "odd-1" in harness.handled, what="handled once the dependency is back")
    assert await harness.dead_letters() == []


async def test_requests_answer_service_unavailable_at_once_while_a_dependency_is_away(harness: Harness) -> None:
    assert await rpc_call(harness.broker, harness.rpc_subject, {"id": "a"}) == {"id": "a"}
    started = asyncio.get_running_loop().time()
    with pytest.raises(ServiceUnavailable):
        await rpc_call(harness.broker, harness.rpc_subject, {"id": "down"}, timeout=5)
    assert asyncio.get_running_loop().time() - started < 2  # an answer, not the caller's timeout


async def test_a_request_handler_that_fails_answers_internal_error_at_once(harness: Harness) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(DomainError) as raised:
        await rpc_call(harness.broker, harness.rpc_subject, {"id": "bug"}, timeout=5)
    assert raised.value.code == "internal_error"
    assert asyncio.get_running_loop().time() - started < 2  # an answer, not the caller's timeout
