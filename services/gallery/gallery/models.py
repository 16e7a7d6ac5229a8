"""Tables of the ``gallery`` schema: the read model projected from every stream."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID

from genimage_common.database import processed_events_table, utc_column
from genimage_common.outbox import outbox_table

SCHEMA = "gallery"
metadata = MetaData(schema=SCHEMA)

generations = Table(
    "generations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    # Null until the `requested` event is seen (events may arrive in any order).
    Column("kind", String(8)),
    Column("prompt", Text),
    Column("negative_prompt", Text),
    Column("model", String(100)),
    Column("width", Integer),
    Column("height", Integer),
    Column("n", SmallInteger),
    Column("seed", BigInteger),
    Column("output_format", String(8)),
    Column("status", String(16), nullable=False, server_default="queued"),
    # queued 0 < running 1 < terminal 2: a projection never moves a generation backwards.
    Column("status_rank", SmallInteger, nullable=False, server_default="0"),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("cost", Integer),
    Column("charged", Integer),
    Column("provider", String(32)),
    Column("error", JSONB),
    Column("timings", JSONB),
    utc_column("requested_at", nullable=True, default_now=False),
    utc_column("created_at"),
    utc_column("updated_at"),
    Index("generations_user_newest", "user_id", "created_at", "id"),
    Index("generations_queued", "requested_at", postgresql_where=text("status = 'queued'")),
)

images = Table(
    "images",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("generation_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("index", SmallInteger, nullable=False),
    Column("object_key", Text, nullable=False),
    Column("thumbnail_key", Text, nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("duration_s", Float),
    Column("prompt", Text),
    Column("kind", String(8)),
    Column("search", TSVECTOR, Computed("to_tsvector('english', coalesce(prompt, ''))", persisted=True)),
    Column("favorite", Boolean, nullable=False, server_default="false"),
    Column("published", Boolean, nullable=False, server_default="false"),
    utc_column("published_at", nullable=True, default_now=False),
    utc_column("deleted_at", nullable=True, default_now=False),
    utc_column("created_at"),
    Index("images_user_newest", "user_id", "created_at", "id"),
    Index("images_search", "search", postgresql_using="gin"),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
