"""``/v1/boards``: the user's collections of images."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from genimage_common.contracts.gallery import BoardRef, CreateBoard, PageRequest, RenameBoard, SetBoardImage

from .. import presenters
from ..deps import CurrentUser, ServicesDep
from ..schemas.boards import BoardIn, BoardOut
from ..schemas.common import Page
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/boards", tags=["boards"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BoardOut, responses=errors(401, 409, 422, 503))
async def create_board(body: BoardIn, user: CurrentUser, services: ServicesDep, response: Response) -> BoardOut:
    """A new, empty board."""
    board = await services.gallery.create_board(CreateBoard(user_id=user.id, name=body.name))
    response.headers["Location"] = f"/v1/boards/{board.id}"
    return presenters.board(board)


@router.get("", response_model=Page[BoardOut], responses=errors(401, 422, 503))
async def list_boards(
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[BoardOut]:
    """The user's boards, newest first."""
    page = await services.gallery.list_boards(PageRequest(user_id=user.id, limit=limit, cursor=cursor))
    return Page(items=[presenters.board(b) for b in page.items], next_cursor=page.next_cursor)


@router.get("/{board_id}", response_model=BoardOut, responses=errors(401, 404, 503))
async def get_board(board_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> BoardOut:
    return presenters.board(await services.gallery.get_board(BoardRef(user_id=user.id, board_id=board_id)))


@router.patch("/{board_id}", response_model=BoardOut, responses=errors(401, 404, 422, 503))
async def rename_board(board_id: uuid.UUID, body: BoardIn, user: CurrentUser, services: ServicesDep) -> BoardOut:
    renamed = await services.gallery.rename_board(RenameBoard(user_id=user.id, board_id=board_id, name=body.name))
    return presenters.board(renamed)


@router.delete("/{board_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 503))
async def delete_board(board_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Delete the board; its images stay in the gallery."""
    await services.gallery.delete_board(BoardRef(user_id=user.id, board_id=board_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{board_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409, 503)
)
async def add_image(board_id: uuid.UUID, image_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Put an image on the board (idempotent); an image may sit on several boards."""
    member = SetBoardImage(user_id=user.id, board_id=board_id, image_id=image_id, member=True)
    await services.gallery.set_board_image(member)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{board_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 503))
async def remove_image(board_id: uuid.UUID, image_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Take an image off the board (idempotent); the image stays in the gallery."""
    member = SetBoardImage(user_id=user.id, board_id=board_id, image_id=image_id, member=False)
    await services.gallery.set_board_image(member)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
