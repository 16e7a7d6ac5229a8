"""Tables of the ``identity`` schema."""

from sqlalchemy import Column, ForeignKey, Index, MetaData, String, Table, Text, func
from sqlalchemy.dialects.postgresql import UUID

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

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
