"""gallery read model: order-independent image registers, trash, boards, users, tombstones

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "gallery"
# Columns an image stub (a gallery event seen before generation.completed) does not know yet.
STUB_NULLABLE = (
    "generation_id",
    "index",
    "object_key",
    "thumbnail_key",
    "content_type",
    "width",
    "height",
    "bytes",
    "sha256",
    "created_at",
)


def _clock(name: str) -> list[sa.Column]:
    return [
        sa.Column(f"{name}_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column(f"{name}_eid", sa.UUID(), nullable=True),
    ]


def upgrade() -> None:
    op.add_column("generations", sa.Column("refunded", sa.Integer(), nullable=True), schema=S)
    op.add_column("generations", sa.Column("refund_reason", sa.String(length=16), nullable=True), schema=S)
    op.add_column("generations", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("generations", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("generations", sa.Column("provider_rank", sa.Integer(), nullable=True), schema=S)

    for column in STUB_NULLABLE:
        op.alter_column("images", column, nullable=True, schema=S)
    op.alter_column("images", "created_at", server_default=None, schema=S)
    for register in ("favorite", "published", "trash"):
        for column in _clock(register):
            op.add_column("images", column, schema=S)
    # btree_gin (a trusted contrib extension) lets one GIN index hold (user_id, search); it is
    # database-wide, so it goes to `public` like any extension, and a rebuild keeps finding it.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA public")
    op.drop_index("images_search", table_name="images", schema=S, postgresql_using="gin")
    op.create_index("images_user_search", "images", ["user_id", "search"], schema=S, postgresql_using="gin")
    op.create_index(
        "images_user_favorites",
        "images",
        ["user_id", "created_at", "id"],
        schema=S,
        postgresql_where=sa.text("favorite AND deleted_at IS NULL"),
    )
    op.create_index(
        "images_feed",
        "images",
        ["published_at", "id"],
        schema=S,
        postgresql_where=sa.text("published AND deleted_at IS NULL AND object_key IS NOT NULL"),
    )
    op.create_index(
        "images_trash", "images", ["deleted_at"], schema=S, postgresql_where=sa.text("deleted_at IS NOT NULL")
    )

    op.create_table(
        "purged_images",
        sa.Column("image_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id"),
        schema=S,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_eid", sa.UUID(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_table(
        "boards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        *_clock("name"),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index("boards_user_newest", "boards", ["user_id", "created_at", "id"], schema=S)
    op.create_table(
        "board_images",
        sa.Column("board_id", sa.UUID(), nullable=False),
        sa.Column("image_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=True),
        *_clock("member"),
        sa.PrimaryKeyConstraint("board_id", "image_id"),
        schema=S,
    )
    op.create_index("board_images_image", "board_images", ["image_id"], schema=S)


def downgrade() -> None:
    op.drop_index("board_images_image", table_name="board_images", schema=S)
    op.drop_table("board_images", schema=S)
    op.drop_index("boards_user_newest", table_name="boards", schema=S)
    op.drop_table("boards", schema=S)
    op.drop_table("users", schema=S)
    op.drop_table("purged_images", schema=S)
    op.drop_index("images_trash", table_name="images", schema=S)
    op.drop_index("images_feed", table_name="images", schema=S)
    op.drop_index("images_user_favorites", table_name="images", schema=S)
    op.drop_index("images_user_search", table_name="images", schema=S, postgresql_using="gin")
    op.create_index("images_search", "images", ["search"], schema=S, postgresql_using="gin")
    for register in ("favorite", "published", "trash"):
        op.drop_column("images", f"{register}_ts", schema=S)
        op.drop_column("images", f"{register}_eid", schema=S)
    # Stubs cannot satisfy the old NOT NULL constraints.
    op.execute(f"DELETE FROM {S}.images WHERE object_key IS NULL OR created_at IS NULL")
    op.alter_column("images", "created_at", server_default=sa.text("now()"), schema=S)
    for column in STUB_NULLABLE:
        op.alter_column("images", column, nullable=False, schema=S)
    for column in ("provider_rank", "finished_at", "started_at", "refund_reason", "refunded"):
        op.drop_column("generations", column, schema=S)
