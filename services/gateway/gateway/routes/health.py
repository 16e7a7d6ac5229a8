from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from genimage_common.database import ping
from genimage_common.worker import readiness

from ..deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    failed = await readiness(
        services.broker, {"postgres": lambda: ping(services.sessions.kw["bind"]), "s3": services.store.ping}
    )
    return JSONResponse(
        {"status": "unavailable" if failed else "ok", "failed": failed}, status_code=503 if failed else 200
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
