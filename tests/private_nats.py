"""A NATS server of one module (or one test package) alone: what is published there reaches no
service of the session, and durable consumers on it start from nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from genimage_common.settings import CommonSettings
from genimage_common.streams import ensure_streams
from genimage_devstack.processes import NatsServer, free_port
from tests.aio import run_sync


async def _ensure_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream(), CommonSettings())
    finally:
        await nc.close()


@contextmanager
def private_nats_server(directory: Path) -> Iterator[NatsServer]:
    """A JetStream server on free loopback ports, its state in ``directory``, with genimage's
    streams in place; stopped by its PID on the way out."""
    server = NatsServer(directory, port=free_port(), monitor_port=free_port())
    server.start()
    try:
        run_sync(_ensure_streams(server.url))
        yield server
    finally:
        server.stop()
