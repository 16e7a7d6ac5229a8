"""Queries and commands over request/reply (``rpc.gallery.*``, queue group ``gallery``).

Every call is declared once in ``genimage_common.contracts.gallery`` (subject, request model,
reply model); here each is bound to the one repository or command function that answers it,
inside one unit of work: a read, or a transaction that commits and then wakes the outbox
relay. Domain errors (``not_found``, ``conflict``, ``validation_error``) are replied as
``{"error": {...}}`` by the broker's error policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsRouter
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.contracts import gallery as g
from genimage_common.contracts.rpc import Rpc

from . import boards, commands, repository
from .deps import Deps, GalleryDeps

router = NatsRouter()
QUEUE = "gallery"

Req = TypeVar("Req")
Run = Callable[[AsyncSession, Req, Deps], Awaitable[Any]]


def serve(call: Rpc[Any, Any], run: Run[Any], *, writes: bool = False) -> None:
    """Answer ``call`` with ``run(session, request, deps)``, its result checked against the
    call's reply model. The handler is typed with the call's models, so that FastStream
    validates the request and the AsyncAPI document shows its schema."""

    async def handler(req: Any, deps: Any) -> Any:
        async with deps.uow.transaction() if writes else deps.uow.read() as session:
            return call.parse_reply(await run(session, req, deps))

    handler.__name__ = handler.__qualname__ = call.name
    handler.__annotations__ = {"req": call.request, "deps": GalleryDeps, "return": call.reply}
    router.subscriber(call.subject, queue=QUEUE)(handler)


def image_filter(req: g.ImageQuery) -> repository.ImageFilter:
    return repository.ImageFilter(
        favorite=req.favorite,
        published=req.published,
        kind=req.kind,
        board_id=req.board,
        since=req.since,
        until=req.until,
        q=req.q.strip() if req.q and req.q.strip() else None,
        trashed=req.trashed,
    )


async def delete_board(session: AsyncSession, req: g.BoardRef, deps: Deps) -> g.BoardDeleted:
    await boards.delete(session, user_id=req.user_id, board_id=req.board_id)
    return g.BoardDeleted(deleted=True)


async def set_board_image(session: AsyncSession, req: g.SetBoardImage, deps: Deps) -> g.BoardMembership:
    await boards.set_membership(
        session, user_id=req.user_id, board_id=req.board_id, image_id=req.image_id, member=req.member
    )
    return g.BoardMembership(board_id=req.board_id, image_id=req.image_id, member=req.member)


# --- queries ------------------------------------------------------------------------------

serve(g.GET_GENERATION, lambda s, r, d: repository.get_generation(s, user_id=r.user_id, generation_id=r.generation_id))
serve(
    g.LIST_GENERATIONS,
    lambda s, r, d: repository.list_generations(s, user_id=r.user_id, limit=r.limit, cursor=r.cursor),
)
serve(g.GET_IMAGE, lambda s, r, d: repository.get_image(s, user_id=r.user_id, image_id=r.image_id))
serve(
    g.LIST_IMAGES,
    lambda s, r, d: repository.list_images(
        s, user_id=r.user_id, limit=r.limit, cursor=r.cursor, filters=image_filter(r)
    ),
)
serve(g.STATS, lambda s, r, d: repository.stats(s, user_id=r.user_id))
serve(g.FEED, lambda s, r, d: repository.feed(s, limit=r.limit, cursor=r.cursor, kind=r.kind))
serve(g.GET_PUBLISHED_IMAGE, lambda s, r, d: repository.get_published_image(s, image_id=r.image_id))
serve(g.LIST_BOARDS, lambda s, r, d: repository.list_boards(s, user_id=r.user_id, limit=r.limit, cursor=r.cursor))
serve(g.GET_BOARD, lambda s, r, d: repository.get_board(s, user_id=r.user_id, board_id=r.board_id))

# --- commands -----------------------------------------------------------------------------

serve(
    g.SET_FAVORITE,
    lambda s, r, d: commands.set_favorite(s, user_id=r.user_id, image_id=r.image_id, favorite=r.favorite),
    writes=True,
)
serve(
    g.SET_PUBLISHED,
    lambda s, r, d: commands.set_published(s, user_id=r.user_id, image_id=r.image_id, published=r.published),
    writes=True,
)
serve(g.TRASH_IMAGE, lambda s, r, d: commands.trash(s, user_id=r.user_id, image_id=r.image_id), writes=True)
serve(g.RESTORE_IMAGE, lambda s, r, d: commands.restore(s, user_id=r.user_id, image_id=r.image_id), writes=True)
serve(
    g.CREATE_BOARD,
    lambda s, r, d: boards.create(s, user_id=r.user_id, name=r.name, max_boards=d.settings.max_boards_per_user),
    writes=True,
)
serve(
    g.RENAME_BOARD,
    lambda s, r, d: boards.rename(s, user_id=r.user_id, board_id=r.board_id, name=r.name),
    writes=True,
)
serve(g.DELETE_BOARD, delete_board, writes=True)
serve(g.SET_BOARD_IMAGE, set_board_image, writes=True)
