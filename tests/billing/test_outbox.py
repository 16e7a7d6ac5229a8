"""The outbox: billing events leave after the commit, in order per account, exactly once for a
consumer that dedupes, even when the relay process is killed around the publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

import nats
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from billing import ledger
from billing.models import outbox
from genimage_common.database import SessionMaker
from genimage_common.ids import new_id
from genimage_common.outbox import OutboxRelay
from genimage_devstack.processes import NatsServer
from tests.billing.factories import funded_user
from tests.billing.test_service import billing_events


async def unpublished(sessions: SessionMaker) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None)))


def crash_relay(database_url: str, nats_url: str, when: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.billing.relay_crash", database_url, nats_url, when],
        env=os.environ,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


async def test_a_relay_killed_around_the_publish_still_delivers_each_event_once_in_order(
    sessions: SessionMaker, database_url: str, private_nats: NatsServer, nc: nats.NATS
) -> None:
    user = await funded_user(sessions, 30)
    gid = new_id()
    async with sessions.begin() as session:
        await ledger.reserve(session, user_id=user, generation_id=gid, amount=10, ttl=timedelta(minutes=15))
    async with sessions.begin() as session:
        await ledger.commit(session, generation_id=gid, delivered=1)
    assert await unpublished(sessions) == 4  # account_opened, credits_granted, credits_reserved, credits_committed

    # Killed after the commit, before anything was sent: the events wait in the outbox.
    crash_relay(database_url, private_nats.url, "before_publish")
    assert await unpublished(sessions) == 4
    assert await billing_events(nc, user) == []

    # Killed after JetStream acknowledged the first event, before marking it: still unpublished.
    crash_relay(database_url, private_nats.url, "after_publish")
    assert await unpublished(sessions) == 4
    assert [e["type"] for e in await billing_events(nc, user)] == ["genimage.billing.account_opened.v1"]

    # The next relay (a restart, or another replica) publishes everything; the event sent twice
    # carries the same Nats-Msg-Id and JetStream keeps one.
    relay = OutboxRelay(sessions, outbox, nc.jetstream(), service="billing", registry=CollectorRegistry())
    assert await relay.relay_once() == 4
    assert await unpublished(sessions) == 0
    assert await relay.relay_once() == 0

    events = await billing_events(nc, user)
    assert [e["type"].split(".")[2] for e in events] == [
        "account_opened",
        "credits_granted",
        "credits_reserved",
        "credits_committed",
    ]
    # A consumer that dedupes by event id applies each once (here they are already unique).
    assert len({e["id"] for e in events}) == len(events) == 4
    async with sessions() as session:
        ids = (await session.execute(select(outbox.c.event_id).order_by(outbox.c.seq))).scalars().all()
    assert [uuid.UUID(e["id"]) for e in events] == list(ids)
