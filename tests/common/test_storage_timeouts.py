"""Object storage calls are bounded: against a real TCP server on loopback that accepts and never
answers (or stops in the middle of a body), every call fails within its deadline with an error
the redelivery policy classifies as transient, after exactly the configured retries."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from genimage_common.redelivery import Failure, classify, is_transient
from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from tests.marks import out_of_process

pytestmark = pytest.mark.timeout(60)

CONNECT_S = 0.5
READ_S = 0.4
RETRIES = 2


class HangingServer:
    """Accepts every connection, reads what comes, answers ``reply`` (nothing by default) and
    then keeps the connection open without another byte until it is stopped."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            if self.reply:
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)  # the request (headers and a small body)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def __enter__(self) -> HangingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture()
@out_of_process
def hanging() -> Iterator[HangingServer]:
    with HangingServer() as server:
        yield server


def store_for(endpoint: str, **overrides: Any) -> ObjectStore:
    settings = CommonSettings(
        s3_endpoint=endpoint,
        s3_connect_timeout_s=CONNECT_S,
        s3_read_timeout_s=READ_S,
        s3_max_retries=RETRIES,
        **overrides,
    )
    return ObjectStore(settings)


async def timed(call: Any) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        await call
    return caught.value, time.monotonic() - start


def test_the_defaults_bound_a_call_to_minutes_not_half_an_hour() -> None:
    s = CommonSettings()
    worst = (s.s3_max_retries + 1) * (s.s3_connect_timeout_s + s.s3_read_timeout_s)
    # minio's own client: 5 minutes connect and read, 5 retries (~30 minutes per call).
    assert worst <= 120, worst
    assert s.s3_max_retries >= 1  # a blip (a reset connection) is retried at once


@pytest.mark.parametrize("operation", ["put", "get", "stat", "delete", "ensure_bucket"])
async def test_a_server_that_never_answers_fails_the_call_in_time(hanging: HangingServer, operation: str) -> None:
    store = store_for(hanging.endpoint)
    calls = {
        "put": lambda: store.put("k/object.png", b"x" * 1000, "image/png"),
        "get": lambda: store.get("k/object.png"),
        "stat": lambda: store.stat("k/object.png"),
        "delete": lambda: store.delete(["k/object.png"]),
        "ensure_bucket": store.ensure_bucket,
    }
    exc, elapsed = await timed(calls[operation]())
    # Each attempt waits READ_S for an answer; urllib3 backs off 0, then 0.4 s between them.
    assert elapsed >= (RETRIES + 1) * READ_S * 0.9, elapsed
    assert elapsed < (RETRIES + 1) * (CONNECT_S + READ_S) + 1.5, elapsed
    assert hanging.accepted == RETRIES + 1, "bounded retries: one connection per attempt"
    assert is_transient(exc), repr(exc)
    assert await classify(exc) is Failure.TRANSIENT


async def test_the_readiness_probe_tries_once(hanging: HangingServer) -> None:
    store = store_for(hanging.endpoint)
    exc, elapsed = await timed(store.ping())
    assert elapsed < CONNECT_S + READ_S + 1.0, elapsed
    assert hanging.accepted == 1
    assert is_transient(exc), repr(exc)


@pytest.mark.e2e  # starts a hanging server itself
async def test_a_body_that_stops_coming_fails_the_read_in_time() -> None:
    # Headers, then 10 bytes of the 100,000 announced, then silence: a read, not a connect.
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    with HangingServer(reply=head + b"0123456789") as server:
        store = store_for(server.endpoint)
        exc, elapsed = await timed(store.get("k/object.png"))
    assert elapsed < READ_S + 2.0, elapsed
    assert is_transient(exc), repr(exc)


async def test_a_port_where_nothing_listens_is_refused_in_time() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    store = store_for(f"http://127.0.0.1:{port}")
    exc, elapsed = await timed(store.put("k/object.png", b"x", "image/png"))
    assert elapsed < 3.0, elapsed
    assert is_transient(exc), repr(exc)


async def test_the_bounded_client_still_talks_to_a_real_store(stack_env: dict[str, str]) -> None:
    settings = CommonSettings(
        **{k.lower(): v for k, v in stack_env.items() if k.startswith("S3_")},
        s3_connect_timeout_s=CONNECT_S,
        s3_read_timeout_s=READ_S * 5,
        s3_max_retries=RETRIES,
    )
    store = ObjectStore(settings)
    key = f"tests/timeouts/{uuid.uuid4()}.bin"
    data = bytes(range(256)) * 4096  # 1 MiB: more than one socket read
    await store.put(key, data, "application/octet-stream")
    try:
        assert await store.get(key) == data
        assert await store.stat(key) == len(data)
        await store.ping()
    finally:
        await store.delete([key])
    assert await store.stat(key) is None
