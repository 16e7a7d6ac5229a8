"""Gallery fixtures: a fresh read-model schema per test on the session's PostgreSQL (the same
tables a rebuild creates, reached through SQLAlchemy's schema translation), and helpers to
apply events and snapshot the model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery import projection
from gallery.models import READ_MODEL, SCHEMA, outbox, processed_events
from gallery.rebuild import MIGRATIONS, apply_events, create_schema
from genimage_common.database import SessionMaker, make_engine, make_sessionmaker
from genimage_common.events import Event, parse_event

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()

STREAM_OF = {"generation": "GENERATION", "billing": "BILLING", "identity": "IDENTITY", "gallery": "GALLERY"}


def stream_of(event: Event[Any]) -> str:
    return STREAM_OF[event.data.name.split(".")[0]]


@dataclass
class Model:
    """One read model in a schema of its own."""

    schema: str
    sessions: SessionMaker

    async def apply(self, *events: Event[Any]) -> None:
        """Each event as a consumer applies it: its own transaction, inbox first."""
        for event in events:
            async with self.sessions.begin() as session:
                await projection.writer_lock(session)
                await apply_events(session, stream_of(event), [event])

    async def snapshot(self, *, user_ids: Iterable[uuid.UUID] | None = None) -> dict[str, list[tuple]]:
        """Every row of the read-model tables (optionally of some users), in a stable order."""
        out: dict[str, list[tuple]] = {}
        async with self.sessions() as session:
            for table in READ_MODEL:
                stmt = select(table)
                if user_ids is not None:
                    owner = table.c.id if table.name == "users" else table.c.user_id
                    stmt = stmt.where(owner.in_(list(user_ids)))
                rows = (await session.execute(stmt)).all()
                out[table.name] = sorted((tuple(r) for r in rows), key=repr)
        return out

    @staticmethod
    def differences(left: dict[str, list[tuple]], right: dict[str, list[tuple]]) -> dict[str, Any]:
        """Rows of one snapshot missing from the other, column by column (for assertion messages)."""
        columns = {t.name: [c.name for c in t.columns] for t in READ_MODEL}
        out: dict[str, Any] = {}
        for name in columns:
            only_left = [r for r in left.get(name, []) if r not in right.get(name, [])]
            only_right = [r for r in right.get(name, []) if r not in left.get(name, [])]
            if only_left or only_right:
                out[name] = {
                    "left": [dict(zip(columns[name], r, strict=True)) for r in only_left],
                    "right": [dict(zip(columns[name], r, strict=True)) for r in only_right],
                }
        return out

    async def outbox_events(self) -> list[Event[Any]]:
        async with self.sessions() as session:
            rows = await session.scalars(select(outbox.c.payload).order_by(outbox.c.seq))
            return [parse_event(p) for p in rows]

    async def processed(self) -> set[uuid.UUID]:
        async with self.sessions() as session:
            return set(await session.scalars(select(processed_events.c.event_id)))


@pytest.fixture(scope="session")
async def gallery_engine(stack_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(stack_env["DATABASE_URL"], pool_size=4)
    yield engine
    await engine.dispose()


async def new_model(engine: AsyncEngine) -> Model:
    schema = f"gallery_t_{uuid.uuid4().hex[:10]}"
    await create_schema(engine, schema, HEAD or "")
    return Model(schema, make_sessionmaker(engine.execution_options(schema_translate_map={SCHEMA: schema})))


async def drop_model(engine: AsyncEngine, model: Model) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{model.schema}" CASCADE'))


@pytest.fixture()
async def model(gallery_engine: AsyncEngine) -> AsyncIterator[Model]:
    """A fresh, empty read model of this test's own."""
    created = await new_model(gallery_engine)
    yield created
    await drop_model(gallery_engine, created)
