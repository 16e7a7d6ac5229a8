"""The trash purge through a PostgreSQL outage (the session's server behind a proxy that is
switched off): it backs off with one log line per backoff step and no stack trace, says when
the database is back, and then purges what came due."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery import commands, purge
from gallery.deps import Deps
from gallery.models import SCHEMA
from gallery.settings import GallerySettings
from genimage_common import events as ev
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.ids import image_id_for, new_id
from genimage_common.outage import Outage
from tests.common.outage_proxy import OutageProxy
from tests.polling import eventually_async

from .conftest import Model
from .factories import Events

pytestmark = pytest.mark.timeout(90)

BASE_S, MAX_S = 0.2, 1.6


class Waker:
    """Stands in for the outbox relay: the purge only wakes it."""

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_the_purge_backs_off_through_a_database_outage(
    model: Model, gallery_engine: AsyncEngine, stack_env: dict[str, str]
) -> None:
    a = Events()
    gid = new_id()
    await model.apply(a.requested(gid, n=1), a.completed(gid, n=1))
    image = image_id_for(gid, 0)
    async with model.sessions.begin() as s:
        await commands.trash(s, user_id=a.user_id, image_id=image)

    url = make_url(stack_env["DATABASE_URL"])
    proxy = await OutageProxy(url.port or 5432, url.host or "127.0.0.1").start()
    proxied = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), pool_size=2)
    sessions = make_sessionmaker(proxied.execution_options(schema_translate_map={SCHEMA: model.schema}))
    settings = GallerySettings(purge_interval_s=0.1, trash_retention_days=0)
    waker = Waker()
    deps = Deps(settings=settings, sessions=sessions, relay=waker, readers=sessions)  # type: ignore[arg-type]
    logger = logging.getLogger(f"tests.purge.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    got = Records()
    logger.addHandler(got)
    outage = Outage("trash purge", logger, base_s=BASE_S, max_s=MAX_S)
    await proxy.down()
    task = asyncio.create_task(purge.purge_forever(deps, outage=outage))
    try:
        # Past the cap: rounds at 0, 0.2, 0.6, 1.4, 3.0, 4.6 s.
        await eventually_async(lambda: outage.failures >= 6, timeout=20, what="six failed rounds")
        assert not any(isinstance(e.data, ev.ImageDeleted) for e in await model.outbox_events())
        await proxy.up()

        async def purged() -> bool:
            return any(isinstance(e.data, ev.ImageDeleted) for e in await model.outbox_events())

        await eventually_async(purged, timeout=MAX_S + 5, what="purged after the database came back")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.removeHandler(got)
        await proxy.stop()
        await proxied.dispose()
    warnings = [r.getMessage() for r in got.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "trash purge: dependency unavailable, backing off",
        *["trash purge: dependency still unavailable, backing off further"] * 3,
        "trash purge: dependency recovered",
    ], warnings
    assert not any(r.exc_info for r in got.records), "a database away is not a stack trace"
    assert waker.woken == 1  # the purge, once the database was back
