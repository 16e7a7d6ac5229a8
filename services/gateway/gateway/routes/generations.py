from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import JSONResponse

from genimage_common.errors import DomainError
from genimage_common.messaging import rpc_call
from genimage_common.subjects import rpc

from .. import generations, idempotency, repository, views
from ..deps import CurrentUser, ServicesDep
from ..live import TerminalWatch
from ..problems import MEDIA_TYPE, problem_body
from ..schemas import GenerationCreate, GenerationOut, Page, WebhookDeliveryOut
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/generations", tags=["generations"])

IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"
PREFER = r"^[\x20-\x7e]{0,200}$"


def prefer_wait(header: str | None, maximum: float) -> float | None:
    """``Prefer: wait=N`` (RFC 7240), at most ``maximum`` seconds; None when absent."""
    for preference in (header or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return min(float(value.strip()), maximum)
    return None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerationOut,
    responses={
        200: {"model": GenerationOut, "description": "Finished within the `Prefer: wait` time"},
        202: {
            "description": "Accepted (queued or running)",
            "headers": {
                "Location": {"schema": {"type": "string"}, "description": "The generation's URL"},
                "Idempotent-Replayed": {
                    "schema": {"type": "string", "enum": ["true"]},
                    "description": "Present when this is the stored outcome of an earlier request with the key",
                },
                "Preference-Applied": {"schema": {"type": "string"}, "description": "`wait=N` when honoured"},
            },
        },
        **errors(400, 401, 402, 409, 413, 422, 429, 503),
    },
)
async def create_generation(
    body: GenerationCreate,
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=IDEMPOTENCY_KEY,
            description="Retries with the same key and body return the first outcome (kept 24 h)",
            examples=["3f8b6c2e-order-42"],
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            pattern=PREFER, description="`wait=N` (N ≤ 60): answer once finished or after N s", examples=["wait=30"]
        ),
    ] = None,
) -> Response:
    """Queue a generation. Credits are reserved now and charged for what is delivered."""
    wait_s = prefer_wait(prefer, services.settings.prefer_wait_max_s)
    key = idempotency_key
    stored: idempotency.Stored | None = None
    if key is not None:
        fingerprint = idempotency.fingerprint("POST", "/v1/generations", body.model_dump(mode="json"))
        stored = await idempotency.begin(services, user_id=user.id, key=key, fingerprint=fingerprint)
        if stored is not None:
            return _respond(stored, replayed=True)
    try:
        outcome = await _create(services, request, user.id, body, key, wait_s)
    except DomainError as exc:
        if key is not None:
            problem = problem_body(exc.status, exc.code, exc.title, exc.message, request.url.path, **exc.fields)
            await idempotency.complete(
                services, user_id=user.id, key=key, outcome=idempotency.Stored(exc.status, problem, MEDIA_TYPE)
            )
        raise
    except BaseException:
        if key is not None:
            await idempotency.release(services, user_id=user.id, key=key)
        raise
    if key is not None:
        await idempotency.complete(services, user_id=user.id, key=key, outcome=outcome)
    response = _respond(outcome, replayed=False)
    if wait_s is not None:
        response.headers["Preference-Applied"] = f"wait={int(wait_s)}"
    return response


async def _create(
    services: ServicesDep,
    request: Request,
    user_id: uuid.UUID,
    body: GenerationCreate,
    key: str | None,
    wait_s: float | None,
) -> idempotency.Stored:
    if wait_s is None or wait_s <= 0:
        created = await generations.create(services, user_id=user_id, body=body, idempotency_key=key)
        final = None
    else:
        # Watching before the request is published: the terminal event cannot slip by.
        async with TerminalWatch(services.broker.connection, user_id) as watch:
            created = await generations.create(services, user_id=user_id, body=body, idempotency_key=key)
            final = await generations.wait_terminal(
                services, watch, user_id=user_id, generation_id=uuid.UUID(created["id"]), timeout=wait_s
            )
    current = views.generation(final, _base(request)) if final is not None else created
    status_code = 200 if current["status"] in views.TERMINAL_STATUSES else 202
    return idempotency.Stored(
        status_code, GenerationOut.model_validate(current).model_dump(mode="json"), "application/json"
    )


def _respond(outcome: idempotency.Stored, *, replayed: bool) -> Response:
    headers = {}
    body = outcome.body
    if isinstance(body, dict) and outcome.status_code < 300 and "id" in body:
        headers["Location"] = f"/v1/generations/{body['id']}"
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=outcome.status_code, headers=headers, media_type=outcome.content_type)


@router.get("", response_model=Page[GenerationOut], responses=errors(401, 422, 429, 503))
async def list_generations(
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> dict:
    """The user's generations, newest first."""
    page = await rpc_call(
        services.broker,
        rpc("gallery", "list_generations"),
        {"user_id": str(user.id), "limit": limit, "cursor": cursor},
        timeout=services.settings.rpc_timeout_s,
    )
    return {"items": [views.generation(g, _base(request)) for g in page["items"]], "next_cursor": page["next_cursor"]}


@router.get("/{generation_id}", response_model=GenerationOut, responses=errors(401, 404, 422, 429, 503))
async def get_generation(generation_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep) -> dict:
    """Status, progress, outputs, error, timings and `queue_position` while queued."""
    found = await generations.get(services, user_id=user.id, generation_id=generation_id)
    return views.generation(found, _base(request))


@router.post(
    "/{generation_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerationOut,
    responses=errors(401, 404, 409, 422, 429, 503),
)
async def cancel_generation(
    generation_id: uuid.UUID, request: Request, user: CurrentUser, services: ServicesDep
) -> dict:
    """Cancel: a queued job never runs, a running one is interrupted, the hold is refunded.
    Answers with the generation as it is now (its status turns `canceled` shortly);
    `409` when it already succeeded or failed."""
    found = await generations.cancel(services, user_id=user.id, generation_id=generation_id)
    return views.generation(found, _base(request))


@router.get(
    "/{generation_id}/webhooks",
    response_model=Page[WebhookDeliveryOut],
    responses=errors(401, 404, 422, 429, 503),
)
async def list_webhook_deliveries(generation_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> dict:
    """The webhook deliveries of this generation (latest 100, newest first): attempts,
    last status, next attempt."""
    await generations.get(services, user_id=user.id, generation_id=generation_id)  # ownership
    async with services.sessions() as session:
        rows = await repository.list_webhook_deliveries(session, user_id=user.id, generation_id=generation_id)
    items = [
        WebhookDeliveryOut(
            id=r.id,
            generation_id=r.generation_id,
            event_type=r.event_type,
            url=r.url,
            status=r.status,
            attempts=r.attempts,
            last_status_code=r.last_status_code,
            last_error=r.last_error,
            next_attempt_at=r.next_attempt_at if r.status == "pending" else None,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
        )
        for r in rows
    ]
    return {"items": items, "next_cursor": None}
