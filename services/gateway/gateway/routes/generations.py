"""``/v1/generations``: queue, list, read, cancel; the webhook deliveries of one."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from genimage_common.contracts.gallery import PageRequest
from genimage_common.contracts.status import is_terminal

from .. import generations, presenters, repository
from ..deps import CurrentUser, LinksDep, ReaderDep, ServicesDep
from ..idempotency import IdempotencyDep, Outcome
from ..prefer import PreferWaitDep
from ..schemas.common import Page
from ..schemas.generations import GenerationCreate, GenerationOut
from ..schemas.webhooks import WebhookDeliveryOut
from ..unit_of_work import unit_of_work
from .params import Cursor, Limit
from .responses import errors

router = APIRouter(prefix="/v1/generations", tags=["generations"])


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
    user: CurrentUser,
    services: ServicesDep,
    links: LinksDep,
    once: IdempotencyDep,
    wait: PreferWaitDep,
) -> Response:
    """Queue a generation. Credits are reserved now and charged for what is delivered."""

    async def create() -> Outcome:
        async with unit_of_work(services.uow) as work:
            queued = await generations.create(services, work, user_id=user.id, body=body, idempotency_key=once.key)
        generation = await wait.until_terminal(queued)
        return Outcome(
            200 if is_terminal(generation.status) else 202,
            presenters.generation(generation, links).model_dump(mode="json"),
        )

    outcome, replayed = await once.run(body, create)
    response = _respond(outcome, replayed=replayed)
    if not replayed and wait.applied is not None:
        response.headers["Preference-Applied"] = wait.applied
    return response


def _respond(outcome: Outcome, *, replayed: bool) -> Response:
    headers = {}
    body = outcome.body
    if isinstance(body, dict) and outcome.status_code < 300 and "id" in body:
        headers["Location"] = presenters.generation_location(body["id"])
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=outcome.status_code, headers=headers, media_type=outcome.content_type)


@router.get("", response_model=Page[GenerationOut], responses=errors(401, 422, 429, 503))
async def list_generations(
    user: CurrentUser, services: ServicesDep, links: LinksDep, limit: Limit = 20, cursor: Cursor = None
) -> Page[GenerationOut]:
    """The user's generations, newest first."""
    page = await services.gallery.list_generations(PageRequest(user_id=user.id, limit=limit, cursor=cursor))
    return Page(items=[presenters.generation(g, links) for g in page.items], next_cursor=page.next_cursor)


@router.get("/{generation_id}", response_model=GenerationOut, responses=errors(401, 404, 422, 429, 503))
async def get_generation(
    generation_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep
) -> GenerationOut:
    """Status, progress, outputs, error, timings and `queue_position` while queued."""
    found = await generations.get(services, user_id=user.id, generation_id=generation_id)
    return presenters.generation(found, links)


@router.post(
    "/{generation_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerationOut,
    responses=errors(401, 404, 409, 422, 429, 503),
)
async def cancel_generation(
    generation_id: uuid.UUID, user: CurrentUser, services: ServicesDep, links: LinksDep
) -> GenerationOut:
    """Cancel: a queued job never runs, a running one is interrupted, the hold is refunded.
    Answers with the generation as it is now (its status turns `canceled` shortly);
    `409` when it already succeeded or failed."""
    found = await generations.cancel(services, user_id=user.id, generation_id=generation_id)
    return presenters.generation(found, links)


@router.get(
    "/{generation_id}/webhooks",
    response_model=Page[WebhookDeliveryOut],
    responses=errors(401, 404, 422, 429, 503),
)
async def list_webhook_deliveries(
    generation_id: uuid.UUID, user: CurrentUser, services: ServicesDep, session: ReaderDep
) -> Page[WebhookDeliveryOut]:
    """The webhook deliveries of this generation (latest 100, newest first): attempts,
    last status, next attempt."""
    await generations.get(services, user_id=user.id, generation_id=generation_id)  # ownership
    rows = await repository.list_webhook_deliveries(session, user_id=user.id, generation_id=generation_id)
    return Page(items=[presenters.webhook_delivery(r) for r in rows], next_cursor=None)
