"""Queries and commands over request/reply (``rpc.gallery.*``, queue group ``gallery``).

Every request names its owner (``user_id``, from the gateway's authentication) except the
public feed's; domain errors (``not_found``, ``conflict``, ``validation_error``) are replied
as ``{"error": {...}}`` by the broker's error policy.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from faststream.nats import NatsRouter
from pydantic import AwareDatetime, BaseModel, Field

from genimage_common.subjects import rpc

from . import boards, commands, cursors, queries
from .deps import GalleryDeps

router = NatsRouter()
QUEUE = "gallery"

Kind = Literal["image", "video"]


# What ``cursors`` hands out (unpadded base64url); anything else is refused with the request,
# before a query runs. ``cursors.decode`` still checks what it decodes.
Cursor = Annotated[str | None, Field(min_length=1, max_length=cursors.MAX_LENGTH, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


class Owned(BaseModel):
    user_id: uuid.UUID


class GenerationRef(Owned):
    generation_id: uuid.UUID


class ImageRef(Owned):
    image_id: uuid.UUID


class Page(Owned):
    limit: int = Field(20, ge=1, le=100)
    cursor: Cursor = None


class ImageFilter(Page):
    favorite: bool | None = None
    published: bool | None = None
    kind: Kind | None = None
    board: uuid.UUID | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    q: str | None = Field(None, min_length=1, max_length=200)
    trashed: bool = False

    def filters(self) -> queries.ImageFilter:
        return queries.ImageFilter(
            favorite=self.favorite,
            published=self.published,
            kind=self.kind,
            board_id=self.board,
            since=self.since,
            until=self.until,
            q=self.q.strip() if self.q and self.q.strip() else None,
            trashed=self.trashed,
        )


class FavoriteCommand(ImageRef):
    favorite: bool


class PublishCommand(ImageRef):
    published: bool


class BoardRef(Owned):
    board_id: uuid.UUID


class BoardCreate(Owned):
    name: str = Field(max_length=200)


class BoardRename(BoardRef):
    name: str = Field(max_length=200)


class BoardImage(BoardRef):
    image_id: uuid.UUID
    member: bool


class FeedPage(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: Cursor = None
    kind: Kind | None = None


class PublicImageRef(BaseModel):
    image_id: uuid.UUID


def _subscriber(verb: str):  # type: ignore[no-untyped-def]
    return router.subscriber(rpc("gallery", verb), queue=QUEUE)


# --- queries ------------------------------------------------------------------------------


@_subscriber("get_generation")
async def get_generation(req: GenerationRef, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.get_generation(session, user_id=req.user_id, generation_id=req.generation_id)


@_subscriber("list_generations")
async def list_generations(req: Page, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.list_generations(session, user_id=req.user_id, limit=req.limit, cursor=req.cursor)


@_subscriber("get_image")
async def get_image(req: ImageRef, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.get_image(session, user_id=req.user_id, image_id=req.image_id)


@_subscriber("list_images")
async def list_images(req: ImageFilter, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.list_images(
            session, user_id=req.user_id, limit=req.limit, cursor=req.cursor, filters=req.filters()
        )


@_subscriber("stats")
async def stats(req: Owned, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.stats(session, user_id=req.user_id)


@_subscriber("feed")
async def feed(req: FeedPage, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.feed(session, limit=req.limit, cursor=req.cursor, kind=req.kind)


@_subscriber("get_published_image")
async def get_published_image(req: PublicImageRef, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.get_published_image(session, image_id=req.image_id)


@_subscriber("list_boards")
async def list_boards(req: Page, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.list_boards(session, user_id=req.user_id, limit=req.limit, cursor=req.cursor)


@_subscriber("get_board")
async def get_board(req: BoardRef, deps: GalleryDeps) -> dict:
    async with deps.readers() as session:
        return await queries.get_board(session, user_id=req.user_id, board_id=req.board_id)


# --- commands -----------------------------------------------------------------------------


@_subscriber("set_favorite")
async def set_favorite(req: FavoriteCommand, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        image = await commands.set_favorite(session, user_id=req.user_id, image_id=req.image_id, favorite=req.favorite)
    deps.relay.wake()
    return image


@_subscriber("set_published")
async def set_published(req: PublishCommand, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        image = await commands.set_published(
            session, user_id=req.user_id, image_id=req.image_id, published=req.published
        )
    deps.relay.wake()
    return image


@_subscriber("trash_image")
async def trash_image(req: ImageRef, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        image = await commands.trash(session, user_id=req.user_id, image_id=req.image_id)
    deps.relay.wake()
    return image


@_subscriber("restore_image")
async def restore_image(req: ImageRef, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        image = await commands.restore(session, user_id=req.user_id, image_id=req.image_id)
    deps.relay.wake()
    return image


@_subscriber("create_board")
async def create_board(req: BoardCreate, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        board = await boards.create(
            session, user_id=req.user_id, name=req.name, max_boards=deps.settings.max_boards_per_user
        )
    deps.relay.wake()
    return board


@_subscriber("rename_board")
async def rename_board(req: BoardRename, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        board = await boards.rename(session, user_id=req.user_id, board_id=req.board_id, name=req.name)
    deps.relay.wake()
    return board


@_subscriber("delete_board")
async def delete_board(req: BoardRef, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        await boards.delete(session, user_id=req.user_id, board_id=req.board_id)
    deps.relay.wake()
    return {"deleted": True}


@_subscriber("set_board_image")
async def set_board_image(req: BoardImage, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        await boards.set_membership(
            session, user_id=req.user_id, board_id=req.board_id, image_id=req.image_id, member=req.member
        )
    deps.relay.wake()
    return {"board_id": str(req.board_id), "image_id": str(req.image_id), "member": req.member}
