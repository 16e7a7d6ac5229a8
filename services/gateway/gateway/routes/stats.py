from __future__ import annotations

from fastapi import APIRouter

from ..deps import CurrentUser, ServicesDep
from ..gallery_schemas import StatsOut
from .images import gallery
from .responses import errors

router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("", response_model=StatsOut, responses=errors(401, 503))
async def stats(user: CurrentUser, services: ServicesDep) -> dict:
    """The user's totals: generations by status, images, favorites, credits spent."""
    return await gallery(services, "stats", {"user_id": str(user.id)})
