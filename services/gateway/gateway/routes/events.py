"""Server-Sent Events: everything of the user, or one generation's events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse

from .. import generations, live
from ..deps import CurrentUser, LinksDep, ServicesDep
from .responses import errors

router = APIRouter(prefix="/v1", tags=["events"])

LAST_EVENT_ID = Header(
    alias="Last-Event-ID",
    max_length=100,
    description="Resume after this event (browsers send it by themselves when they reconnect)",
)

SSE_RESPONSE = {
    200: {
        "description": "A `text/event-stream`: each event has an `id` (its position), an `event` "
        "(the event type, e.g. `generation.progress`) and JSON `data` "
        "`{id, type, time, data}`; comments every few seconds keep the connection alive. "
        "The first event is `ready`.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 42-7-3\nevent: generation.progress\ndata: {"id":"...","type":'
                '"generation.progress","time":"2026-11-22T10:00:01.000Z","data":{"generation_id":"...",'
                '"progress":0.5,"stage":"rendering","status":"running"}}\n\n',
            }
        },
    }
}


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={**SSE_RESPONSE, **errors(401, 422, 429, 503)},
)
async def user_events(
    user: CurrentUser,
    services: ServicesDep,
    links: LinksDep,
    last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
) -> EventSourceResponse:
    """Server-Sent Events of everything that happens to the user's generations, credits and
    images, live; resumable with `Last-Event-ID`. Ids look like `42-7-3`."""
    live.parse_cursor(last_event_id, len(live.USER_FEED))  # 422 now rather than mid-stream
    feed = live.user_feed(
        services.broker.connection.jetstream(), user_id=user.id, last_event_id=last_event_id, links=links
    )
    return EventSourceResponse(feed, ping=services.settings.sse_heartbeat_s, send_timeout=30)


@router.get(
    "/generations/{generation_id}/events",
    response_class=EventSourceResponse,
    responses={**SSE_RESPONSE, **errors(401, 404, 422, 429, 503)},
)
async def generation_events(
    generation_id: uuid.UUID,
    user: CurrentUser,
    services: ServicesDep,
    links: LinksDep,
    last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
) -> EventSourceResponse:
    """Server-Sent Events of one generation from its start (or after `Last-Event-ID`); the
    stream ends after its terminal event (`generation.completed`, `failed` or `canceled`)."""
    live.parse_cursor(last_event_id, 1)
    found = await generations.get(services, user_id=user.id, generation_id=generation_id)
    feed = live.generation_feed(
        services.broker.connection.jetstream(),
        user_id=user.id,
        generation=found,
        last_event_id=last_event_id,
        links=links,
    )
    return EventSourceResponse(feed, ping=services.settings.sse_heartbeat_s, send_timeout=30)
