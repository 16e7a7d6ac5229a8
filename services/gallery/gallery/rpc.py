"""Queries and commands over request/reply (``rpc.gallery.*``, queue group ``gallery``)."""

from __future__ import annotations

import uuid
from typing import Literal

from faststream.nats import NatsRouter
from pydantic import BaseModel, Field

from genimage_common.subjects import rpc

from . import commands, queries
from .deps import GalleryDeps

router = NatsRouter()
QUEUE = "gallery"


class Owned(BaseModel):
    user_id: uuid.UUID


class GenerationRef(Owned):
    generation_id: uuid.UUID


class ImageRef(Owned):
    image_id: uuid.UUID


class Page(Owned):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=200)


class ImageFilter(Page):
    favorite: bool | None = None
    kind: Literal["image", "video"] | None = None


class FavoriteCommand(ImageRef):
    favorite: bool


@router.subscriber(rpc("gallery", "get_generation"), queue=QUEUE)
async def get_generation(req: GenerationRef, deps: GalleryDeps) -> dict:
    async with deps.sessions() as session:
        return await queries.get_generation(session, user_id=req.user_id, generation_id=req.generation_id)


@router.subscriber(rpc("gallery", "list_generations"), queue=QUEUE)
async def list_generations(req: Page, deps: GalleryDeps) -> dict:
    async with deps.sessions() as session:
        return await queries.list_generations(session, user_id=req.user_id, limit=req.limit, cursor=req.cursor)


@router.subscriber(rpc("gallery", "get_image"), queue=QUEUE)
async def get_image(req: ImageRef, deps: GalleryDeps) -> dict:
    async with deps.sessions() as session:
        return queries.image_dict(await queries.get_image(session, user_id=req.user_id, image_id=req.image_id))


@router.subscriber(rpc("gallery", "list_images"), queue=QUEUE)
async def list_images(req: ImageFilter, deps: GalleryDeps) -> dict:
    async with deps.sessions() as session:
        return await queries.list_images(
            session, user_id=req.user_id, limit=req.limit, cursor=req.cursor, favorite=req.favorite, kind=req.kind
        )


@router.subscriber(rpc("gallery", "set_favorite"), queue=QUEUE)
async def set_favorite(req: FavoriteCommand, deps: GalleryDeps) -> dict:
    async with deps.sessions.begin() as session:
        image = await commands.set_favorite(session, user_id=req.user_id, image_id=req.image_id, favorite=req.favorite)
    deps.relay.wake()
    return image
