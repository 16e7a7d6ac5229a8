"""Tables of the ``billing`` schema. Invariants live in the database, not only in Python.

The ledger is double-entry: a ``transfer`` is one movement of credits and owns two or more
``entries`` that sum to zero. Per user there are two accounts, ``available`` and ``held``
(their running balances are the two columns of ``accounts``); the system accounts
``grants``, ``purchases`` and ``revenue`` have no row, their balance is the sum of their
entries (no hot row that every transfer would have to lock).

Besides the CHECK and UNIQUE constraints declared here, migration 0002 installs triggers
(see ``billing/migrations/versions/0002_double_entry_ledger.py`` and docs/billing.md) that
refuse at commit time any transfer whose entries do not balance, any account whose balances
are not the running total of its entries, any ``held`` balance other than the sum of the
user's pending holds, and any second resolution of a hold.
"""

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
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from genimage_common.database import processed_events_table, utc_column
from genimage_common.outbox import outbox_table

SCHEMA = "billing"
metadata = MetaData(schema=SCHEMA)

# Accounts of a user (balances on ``accounts``) and of the system (balances = sum of entries).
USER_ACCOUNTS = ("available", "held")
SYSTEM_ACCOUNTS = ("grants", "purchases", "revenue")
TRANSFER_KINDS = ("grant", "reserve", "commit", "release", "refund", "expire", "late_charge")

accounts = Table(
    "accounts",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    utc_column("created_at"),
    utc_column("updated_at"),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("held >= 0", name="held_not_negative"),
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
    # What the commit charged (the rest was released).
    Column("committed", BigInteger, nullable=True),
    Column("void_reason", String(16), nullable=True),
    utc_column("expires_at", default_now=False),
    utc_column("created_at"),
    utc_column("resolved_at", nullable=True, default_now=False),
    # A completion that arrived after the hold expired: charged from available, or not at all.
    Column("late_outcome", String(16), nullable=True),
    Column("late_amount", BigInteger, nullable=True),
    utc_column("late_resolved_at", nullable=True, default_now=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("units > 0", name="units_positive"),
    CheckConstraint("status IN ('pending', 'committed', 'voided', 'expired')", name="status_known"),
    CheckConstraint("committed IS NULL OR (committed >= 0 AND committed <= amount)", name="commit_within_hold"),
    CheckConstraint("(status = 'pending') = (resolved_at IS NULL)", name="resolved_once"),
    CheckConstraint("(status = 'committed') = (committed IS NOT NULL)", name="committed_amount_iff_committed"),
    CheckConstraint("(status = 'voided') = (void_reason IS NOT NULL)", name="void_reason_iff_voided"),
    CheckConstraint("void_reason IS NULL OR void_reason IN ('failed', 'canceled')", name="void_reason_known"),
    CheckConstraint("late_outcome IS NULL OR status = 'expired'", name="late_only_after_expiry"),
    CheckConstraint("late_outcome IS NULL OR late_outcome IN ('collected', 'uncollected')", name="late_outcome_known"),
    CheckConstraint(
        "(late_outcome IS NULL) = (late_amount IS NULL) AND (late_outcome IS NULL) = (late_resolved_at IS NULL)",
        name="late_recorded_whole",
    ),
    CheckConstraint("late_amount IS NULL OR (late_amount > 0 AND late_amount <= amount)", name="late_within_hold"),
    Index("holds_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
    Index("holds_pending_user", "user_id", postgresql_where=text("status = 'pending'")),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey(accounts.c.user_id), nullable=False),
    Column("generation_id", UUID(as_uuid=True), nullable=True),
    # Grants: "<reason>:<reference>", the idempotency key.
    Column("reference", String(300), nullable=True),
    Column("amount", BigInteger, nullable=False),
    # The user's side of the movement and the running balances after it (checked by trigger).
    Column("available_delta", BigInteger, nullable=False),
    Column("held_delta", BigInteger, nullable=False),
    Column("available_after", BigInteger, nullable=False),
    Column("held_after", BigInteger, nullable=False),
    utc_column("created_at"),
    CheckConstraint("amount > 0", name="transfer_amount_positive"),
    CheckConstraint(
        "kind IN ('grant', 'reserve', 'commit', 'release', 'refund', 'expire', 'late_charge')", name="kind_known"
    ),
    CheckConstraint("(kind = 'grant') = (generation_id IS NULL)", name="generation_iff_not_grant"),
    CheckConstraint("(kind = 'grant') = (reference IS NOT NULL)", name="reference_iff_grant"),
    CheckConstraint("available_after >= 0 AND held_after >= 0", name="after_not_negative"),
    # One reserve, one commit, one release, one refund... per generation: a replay cannot post twice.
    UniqueConstraint("generation_id", "kind", name="one_transfer_per_kind_and_generation"),
    Index("transfers_user_newest", "user_id", "id"),
    Index("transfers_one_grant_per_reference", "reference", unique=True, postgresql_where=text("kind = 'grant'")),
)

entries = Table(
    "entries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("transfer_id", BigInteger, ForeignKey(transfers.c.id), nullable=False, index=True),
    Column("account", String(16), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey(accounts.c.user_id), nullable=True),
    # Signed: credits into the account are positive, debits negative.
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount <> 0", name="entry_not_zero"),
    CheckConstraint("account IN ('available', 'held', 'grants', 'purchases', 'revenue')", name="account_known"),
    CheckConstraint("(account IN ('available', 'held')) = (user_id IS NOT NULL)", name="user_account_has_user"),
    Index("entries_system_accounts", "account", postgresql_where=text("user_id IS NULL")),
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
    CheckConstraint("reason IN ('signup', 'purchase', 'admin', 'promo')", name="grant_reason_known"),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
