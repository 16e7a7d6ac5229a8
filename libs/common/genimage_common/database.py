"""PostgreSQL access shared by the services that own a schema: engine, inbox, migrations.

Each service owns one schema and migrates it with its own Alembic history; nothing here
reads another service's tables.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import Column, DateTime, MetaData, String, Table, func, text
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .telemetry import instrument_sqlalchemy

SessionMaker = async_sessionmaker[AsyncSession]


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    # A span per statement while OTEL export is on; nothing otherwise.
    instrument_sqlalchemy(engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def processed_events_table(metadata: MetaData) -> Table:
    """The inbox: ids of events a consumer has applied, written in the same transaction as the change."""
    return Table(
        "processed_events",
        metadata,
        Column("event_id", PgUUID(as_uuid=True), primary_key=True),
        Column("consumer", String(100), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim_event(session: AsyncSession, table: Table, *, event_id: uuid.UUID, consumer: str) -> bool:
    """Record that ``consumer`` applies ``event_id`` now; False when it already did (a redelivery)."""
    result = await session.execute(
        insert(table).values(event_id=event_id, consumer=consumer).on_conflict_do_nothing().returning(table.c.event_id)
    )
    return result.first() is not None


# --- migrations ---------------------------------------------------------------------------


def run_migrations_online(target_metadata: MetaData, schema: str) -> None:
    """Body of every service's Alembic ``env.py``: async engine, schema-local version table."""
    from alembic import context

    config = context.config
    url = config.get_main_option("sqlalchemy.url")

    def do_run(connection) -> None:  # type: ignore[no-untyped-def]
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, parent: type_ != "schema" or name == schema,
        )
        with context.begin_transaction():
            # Several replicas may start at once: one migrates, the others wait and find it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{schema}"})
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(do_run)
                await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(main())


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """``alembic upgrade`` of one service's history, without an alembic.ini."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def utc_column(name: str, *, nullable: bool = False, default_now: bool = True) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None)
