from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from genimage_common.database import ping
from genimage_common.worker import readiness

from ..deps import ServicesDep

router = APIRouter(tags=["operations"])


READY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "failed": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["status", "failed"],
}


@router.get("/healthz", responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready", "content": {"application/json": {"schema": READY}}},
        503: {"description": "A dependency is down", "content": {"application/json": {"schema": READY}}},
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: NATS, PostgreSQL and S3 reachable."""
    failed = await readiness(
        services.broker, {"postgres": lambda: ping(services.sessions.kw["bind"]), "s3": services.store.ping}
    )
    return JSONResponse(
        {"status": "unavailable" if failed else "ok", "failed": failed}, status_code=503 if failed else 200
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
