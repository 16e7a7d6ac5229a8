"""A billing outbox relay that is killed (SIGKILL, no clean-up) at a chosen point of its round:
``before_publish`` (rows committed, nothing sent) or ``after_publish`` (JetStream acknowledged
the first event, the rows are not yet marked published).

    python -m tests.billing.relay_crash <database_url> <nats_url> before_publish|after_publish
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import nats
from prometheus_client import CollectorRegistry

from billing.models import outbox
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.outbox import OutboxRelay


class DyingJetStream:
    def __init__(self, js: Any, when: str) -> None:
        self._js, self._when = js, when

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        if self._when == "before_publish":
            os.kill(os.getpid(), signal.SIGKILL)
        ack = await self._js.publish(*args, **kwargs)
        if self._when == "after_publish":
            os.kill(os.getpid(), signal.SIGKILL)
        return ack


async def main(database_url: str, nats_url: str, when: str) -> None:
    nc = await nats.connect(nats_url)
    engine = make_engine(database_url)
    relay = OutboxRelay(
        make_sessionmaker(engine),
        outbox,
        DyingJetStream(nc.jetstream(), when),  # type: ignore[arg-type]
        service="billing",
        registry=CollectorRegistry(),
    )
    await relay.relay_once()
    raise SystemExit("the relay should have been killed")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
