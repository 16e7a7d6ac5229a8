from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from ..deps import CurrentUser, ServicesDep
from ..gallery_schemas import BoardIn, BoardOut
from ..schemas import Page
from .images import gallery
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/boards", tags=["boards"])


def _ref(user: CurrentUser, board_id: uuid.UUID) -> dict[str, str]:
    return {"user_id": str(user.id), "board_id": str(board_id)}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BoardOut, responses=errors(401, 409, 422, 503))
async def create_board(body: BoardIn, user: CurrentUser, services: ServicesDep, response: Response) -> dict:
    """A new, empty board."""
    board = await gallery(services, "create_board", {"user_id": str(user.id), "name": body.name})
    response.headers["Location"] = f"/v1/boards/{board['id']}"
    return board


@router.get("", response_model=Page[BoardOut], responses=errors(401, 422, 503))
async def list_boards(
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> dict:
    """The user's boards, newest first."""
    return await gallery(services, "list_boards", {"user_id": str(user.id), "limit": limit, "cursor": cursor})


@router.get("/{board_id}", response_model=BoardOut, responses=errors(401, 404, 503))
async def get_board(board_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> dict:
    return await gallery(services, "get_board", _ref(user, board_id))


@router.patch("/{board_id}", response_model=BoardOut, responses=errors(401, 404, 422, 503))
async def rename_board(board_id: uuid.UUID, body: BoardIn, user: CurrentUser, services: ServicesDep) -> dict:
    return await gallery(services, "rename_board", {**_ref(user, board_id), "name": body.name})


@router.delete("/{board_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 503))
async def delete_board(board_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Delete the board; its images stay in the gallery."""
    await gallery(services, "delete_board", _ref(user, board_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{board_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409, 503)
)
async def add_image(board_id: uuid.UUID, image_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Put an image on the board (idempotent); an image may sit on several boards."""
    await gallery(services, "set_board_image", {**_ref(user, board_id), "image_id": str(image_id), "member": True})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{board_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 503))
async def remove_image(board_id: uuid.UUID, image_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> Response:
    """Take an image off the board (idempotent); the image stays in the gallery."""
    await gallery(services, "set_board_image", {**_ref(user, board_id), "image_id": str(image_id), "member": False})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
