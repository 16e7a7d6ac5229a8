"""Tables of the ``gallery`` schema: the read model projected from every stream.

Rows may be created by whichever event arrives first, so most columns are nullable: an image
row made by a ``gallery.*`` event before its ``generation.completed`` is a *stub* (no
``object_key`` yet) that no query shows. User-controlled flags are last-writer-wins registers:
each carries the ``(time, event id)`` clock of the event that set it, and an event only
changes a register whose clock is older (see docs/gallery.md).
"""

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


def _clock(register: str) -> tuple[Column, Column]:
    """The (time, event id) of the event that last set ``register``."""
    return utc_column(f"{register}_ts", nullable=True, default_now=False), Column(f"{register}_eid", UUID(as_uuid=True))


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
    Column("refunded", Integer),
    Column("refund_reason", String(16)),
    utc_column("started_at", nullable=True, default_now=False),
    utc_column("finished_at", nullable=True, default_now=False),
    # Attempt number of the `started` event that named the provider; `completed` outranks all.
    Column("provider_rank", Integer),
    Index("generations_user_newest", "user_id", "created_at", "id"),
    Index("generations_queued", "requested_at", postgresql_where=text("status = 'queued'")),
)

images = Table(
    "images",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    # Null on a stub (a gallery event seen before generation.completed).
    Column("generation_id", UUID(as_uuid=True), index=True),
    Column("index", SmallInteger),
    Column("object_key", Text),
    Column("thumbnail_key", Text),
    Column("content_type", String(32)),
    Column("width", Integer),
    Column("height", Integer),
    Column("bytes", BigInteger),
    Column("sha256", String(64)),
    Column("duration_s", Float),
    Column("prompt", Text),
    Column("kind", String(8)),
    Column("search", TSVECTOR, Computed("to_tsvector('english', coalesce(prompt, ''))", persisted=True)),
    Column("favorite", Boolean, nullable=False, server_default="false"),
    Column("published", Boolean, nullable=False, server_default="false"),
    utc_column("published_at", nullable=True, default_now=False),
    # In the trash since (null: not in the trash). A purge deletes the row (``purged_images``).
    utc_column("trashed_at", nullable=True, default_now=False),
    # The time of generation.completed: the sort key of every image list, immutable once set.
    utc_column("created_at", nullable=True, default_now=False),
    *_clock("favorite"),
    *_clock("published"),
    *_clock("trash"),
    Index("images_user_newest", "user_id", "created_at", "id"),
    # Full-text search is always within one user's images: a GIN index over (user_id, search)
    # (btree_gin) finds them without reading every user's matches (ADR 31).
    Index("images_user_search", "user_id", "search", postgresql_using="gin"),
    Index(
        "images_user_favorites",
        "user_id",
        "created_at",
        "id",
        postgresql_where=text("favorite AND trashed_at IS NULL"),
    ),
    Index(
        "images_feed",
        "published_at",
        "id",
        postgresql_where=text("published AND trashed_at IS NULL AND object_key IS NOT NULL"),
    ),
    Index("images_trash", "trashed_at", postgresql_where=text("trashed_at IS NOT NULL")),
)

# Images purged from the trash: a late or replayed event about them changes nothing.
purged_images = Table(
    "purged_images",
    metadata,
    Column("image_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    utc_column("purged_at", default_now=False),
)

# Only what the projection needs from identity events: no email is ever stored here.
users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    utc_column("registered_at", nullable=True, default_now=False),
    utc_column("deleted_at", nullable=True, default_now=False),
    Column("deleted_eid", UUID(as_uuid=True)),
)

boards = Table(
    "boards",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("name", String(100)),
    # Null until board_created is seen; deleted_at set by board_deleted (a tombstone).
    utc_column("created_at", nullable=True, default_now=False),
    utc_column("deleted_at", nullable=True, default_now=False),
    *_clock("name"),
    Index("boards_user_newest", "user_id", "created_at", "id"),
)

board_images = Table(
    "board_images",
    metadata,
    Column("board_id", UUID(as_uuid=True), primary_key=True),
    Column("image_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    # Kept (false) after a removal so that its clock still orders a late add.
    Column("member", Boolean, nullable=False),
    utc_column("added_at", nullable=True, default_now=False),
    *_clock("member"),
    Index("board_images_image", "image_id"),
)

processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)

# Tables of the read model proper (what a rebuild recreates from the streams).
READ_MODEL = (generations, images, purged_images, users, boards, board_images)
