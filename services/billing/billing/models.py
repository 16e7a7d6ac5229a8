"""Tables of the ``billing`` schema. Invariants live in the database, not only in Python."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from genimage_common.database import processed_events_table, utc_column
from genimage_common.outbox import outbox_table

SCHEMA = "billing"
metadata = MetaData(schema=SCHEMA)

accounts = Table(
    "accounts",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    utc_column("created_at"),
    utc_column("updated_at"),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
)

holds = Table(
    "holds",
    metadata,
    Column("generation_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(accounts.c.user_id), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    # How many outputs the amount pays for: a partial delivery commits its share.
    Column("units", Integer, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("committed", BigInteger, nullable=True),
    utc_column("expires_at", default_now=False),
    utc_column("created_at"),
    utc_column("resolved_at", nullable=True, default_now=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("units > 0", name="units_positive"),
    CheckConstraint("status IN ('pending', 'committed', 'voided', 'expired')", name="status_known"),
    CheckConstraint("committed IS NULL OR (committed >= 0 AND committed <= amount)", name="commit_within_hold"),
    CheckConstraint("(status = 'pending') = (resolved_at IS NULL)", name="resolved_once"),
    Index("holds_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(accounts.c.user_id), nullable=False),
    Column("type", String(16), nullable=False),
    # Signed change of the available balance.
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("generation_id", UUID(as_uuid=True), nullable=True),
    Column("reference", String(255), nullable=True),
    utc_column("created_at"),
    CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
    Index("ledger_entries_user_newest", "user_id", "id"),
)

grants = Table(
    "grants",
    metadata,
    Column("reason", String(16), primary_key=True),
    Column("reference", String(255), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(accounts.c.user_id), nullable=False),
    Column("amount", BigInteger, nullable=False),
    utc_column("created_at"),
    CheckConstraint("amount > 0", name="grant_positive"),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
