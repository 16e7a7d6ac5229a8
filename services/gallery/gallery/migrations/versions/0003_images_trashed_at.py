"""images.deleted_at → trashed_at: the column says when an image went to the trash (a purge
deletes the row); ``deleted`` is kept for what is gone (``gallery.image_deleted``, a deleted
board or user).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "gallery"


def upgrade() -> None:
    # PostgreSQL rewrites the partial indexes' predicates (images_user_favorites, images_feed,
    # images_trash) to the new name with the column: nothing else to change.
    op.alter_column("images", "deleted_at", new_column_name="trashed_at", schema=S)


def downgrade() -> None:
    op.alter_column("images", "trashed_at", new_column_name="deleted_at", schema=S)
