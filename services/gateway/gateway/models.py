"""Tables of the ``identity`` schema."""

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from genimage_common.database import processed_events_table, utc_column
from genimage_common.outbox import outbox_table

SCHEMA = "identity"
metadata = MetaData(schema=SCHEMA)

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False, server_default="user"),
    utc_column("created_at"),
    utc_column("deleted_at", nullable=True, default_now=False),
    Index("users_email_unique", func.lower(Column("email")), unique=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(users.c.id), nullable=False, index=True),
    # All tokens descending from one login; reuse of a rotated token revokes the family.
    Column("family_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    utc_column("created_at"),
    utc_column("expires_at", default_now=False),
    utc_column("rotated_at", nullable=True, default_now=False),
    utc_column("revoked_at", nullable=True, default_now=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(users.c.id), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    utc_column("created_at"),
    utc_column("last_used_at", nullable=True, default_now=False),
    utc_column("revoked_at", nullable=True, default_now=False),
)

# Users of an external OIDC issuer, mapped on first sight.
external_identities = Table(
    "external_identities",
    metadata,
    Column("issuer", String(255), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey(users.c.id), nullable=False, index=True),
    utc_column("created_at"),
)

# Stripe-style idempotency: one row per (user, key), kept `idempotency_ttl_s`.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("key", String(255), primary_key=True),
    # sha256 of method, path and the canonical request body.
    Column("fingerprint", String(64), nullable=False),
    # NULL while the first request runs.
    Column("status_code", Integer, nullable=True),
    Column("response_body", JSONB, nullable=True),
    Column("content_type", String(100), nullable=True),
    utc_column("locked_at"),
    utc_column("created_at"),
    utc_column("expires_at", default_now=False),
    Index("ix_identity_idempotency_keys_expires_at", "expires_at"),
)

# The webhook a generation request asked for.
webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("generation_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("events", JSONB, nullable=False),
    utc_column("created_at"),
)

# One row per (event, subscription): its attempts, outcome and schedule.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # Derived from the event id: the `webhook-id` header, stable across retries.
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("generation_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSONB, nullable=False),
    # pending | delivered | failed
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    utc_column("next_attempt_at"),
    utc_column("last_attempt_at", nullable=True, default_now=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    utc_column("created_at"),
    utc_column("delivered_at", nullable=True, default_now=False),
    Index("ix_identity_webhook_deliveries_generation", "generation_id", "created_at"),
    Index(
        "ix_identity_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
    ),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
