"""``rpc.gallery.*``: the queries and commands the gallery answers (queue group ``gallery``).

Every request names its owner (``user_id``, from the gateway's authentication) except the
public feed's; another user's id is simply not found.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AwareDatetime, Field

from .records import BoardRecord, GenerationRecord, ImageRecord, Kind, Page, PublicImage, PublishedImage, Record
from .rpc import Request, Rpc

SERVICE = "gallery"
# What the gallery's cursors look like (unpadded base64url, at most this long); anything else
# is refused with the request, before a query runs. The gallery still checks what it decodes.
CURSOR_MAX_LENGTH = 200
Cursor = Annotated[str | None, Field(min_length=1, max_length=CURSOR_MAX_LENGTH, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


# --- requests -----------------------------------------------------------------------------


class UserRef(Request):
    user_id: uuid.UUID


class GenerationRef(UserRef):
    generation_id: uuid.UUID


class ImageRef(UserRef):
    image_id: uuid.UUID


class PageRequest(UserRef):
    limit: int = Field(20, ge=1, le=100)
    cursor: Cursor = None


class ImageQuery(PageRequest):
    """One page of the user's images; every filter narrows the list."""

    favorite: bool | None = None
    published: bool | None = None
    kind: Kind | None = None
    board: uuid.UUID | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    q: str | None = Field(None, min_length=1, max_length=200)
    trashed: bool = False


class SetFavorite(ImageRef):
    favorite: bool


class SetPublished(ImageRef):
    published: bool


class BoardRef(UserRef):
    board_id: uuid.UUID


class CreateBoard(UserRef):
    name: str = Field(max_length=200)


class RenameBoard(BoardRef):
    name: str = Field(max_length=200)


class SetBoardImage(BoardRef):
    image_id: uuid.UUID
    member: bool


class FeedRequest(Request):
    limit: int = Field(20, ge=1, le=100)
    cursor: Cursor = None
    kind: Kind | None = None


class PublicImageRef(Request):
    image_id: uuid.UUID


# --- replies besides the read models ------------------------------------------------------


class GenerationCounts(Record):
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int
    total: int


class Stats(Record):
    generations: GenerationCounts
    images: int
    videos: int
    favorites: int
    published: int
    trashed: int
    boards: int
    credits_spent: int


class BoardDeleted(Record):
    deleted: bool


class BoardMembership(Record):
    board_id: uuid.UUID
    image_id: uuid.UUID
    member: bool


# --- calls --------------------------------------------------------------------------------

GET_GENERATION = Rpc[GenerationRef, GenerationRecord](SERVICE, "get_generation", GenerationRef, GenerationRecord)
LIST_GENERATIONS = Rpc[PageRequest, Page[GenerationRecord]](
    SERVICE, "list_generations", PageRequest, Page[GenerationRecord]
)
GET_IMAGE = Rpc[ImageRef, ImageRecord](SERVICE, "get_image", ImageRef, ImageRecord)
LIST_IMAGES = Rpc[ImageQuery, Page[ImageRecord]](SERVICE, "list_images", ImageQuery, Page[ImageRecord])
STATS = Rpc[UserRef, Stats](SERVICE, "stats", UserRef, Stats)
FEED = Rpc[FeedRequest, Page[PublicImage]](SERVICE, "feed", FeedRequest, Page[PublicImage])
GET_PUBLISHED_IMAGE = Rpc[PublicImageRef, PublishedImage](
    SERVICE, "get_published_image", PublicImageRef, PublishedImage
)
LIST_BOARDS = Rpc[PageRequest, Page[BoardRecord]](SERVICE, "list_boards", PageRequest, Page[BoardRecord])
GET_BOARD = Rpc[BoardRef, BoardRecord](SERVICE, "get_board", BoardRef, BoardRecord)

SET_FAVORITE = Rpc[SetFavorite, ImageRecord](SERVICE, "set_favorite", SetFavorite, ImageRecord)
SET_PUBLISHED = Rpc[SetPublished, ImageRecord](SERVICE, "set_published", SetPublished, ImageRecord)
TRASH_IMAGE = Rpc[ImageRef, ImageRecord](SERVICE, "trash_image", ImageRef, ImageRecord)
RESTORE_IMAGE = Rpc[ImageRef, ImageRecord](SERVICE, "restore_image", ImageRef, ImageRecord)
CREATE_BOARD = Rpc[CreateBoard, BoardRecord](SERVICE, "create_board", CreateBoard, BoardRecord)
RENAME_BOARD = Rpc[RenameBoard, BoardRecord](SERVICE, "rename_board", RenameBoard, BoardRecord)
DELETE_BOARD = Rpc[BoardRef, BoardDeleted](SERVICE, "delete_board", BoardRef, BoardDeleted)
SET_BOARD_IMAGE = Rpc[SetBoardImage, BoardMembership](SERVICE, "set_board_image", SetBoardImage, BoardMembership)
