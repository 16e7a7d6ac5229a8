"""``/v1/stats``: the user's totals."""

from __future__ import annotations

from fastapi import APIRouter

from genimage_common.contracts.gallery import UserRef

from .. import presenters
from ..deps import CurrentUser, ServicesDep
from ..schemas.stats import StatsOut
from .responses import errors

router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("", response_model=StatsOut, responses=errors(401, 503))
async def stats(user: CurrentUser, services: ServicesDep) -> StatsOut:
    """The user's totals: generations by status, images, favorites, credits spent."""
    return presenters.stats(await services.gallery.stats(UserRef(user_id=user.id)))
