"""The gateway's AsyncAPI document at ``/docs/asyncapi`` (``.json`` for the document itself),
as the workers serve theirs: what it consumes (typed with the event models), what it
publishes, and the requests it sends to billing and the gallery (their contract models).

It is built from a broker that never connects: the same consumer declarations the gateway
runs (``consumers.build_router``), whether or not this replica runs them, plus declarations of
what it sends. Unlike the workers' page it has no "try it out": it is a public endpoint.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.site import get_asyncapi_html

from genimage_common.contracts import billing, gallery
from genimage_common.contracts.rpc import Rpc
from genimage_common.events import Event, GenerationCancelRequested, GenerationRequested, UserRegistered
from genimage_common.streams import GENERATION, IDENTITY
from genimage_common.subjects import event_subject

from . import consumers

PATH = "/docs/asyncapi"
# What the gateway publishes: JetStream events (the identity one through its outbox).
PUBLISHED = (
    (GenerationRequested, GENERATION, "A generation accepted (its credits reserved) for the workers to run"),
    (GenerationCancelRequested, GENERATION, "A client asked to cancel a generation"),
    (UserRegistered, IDENTITY, "A new account (billing grants its signup credits); relayed from the outbox"),
)


def _calls() -> list[Rpc[Any, Any]]:
    return [c for module in (billing, gallery) for c in vars(module).values() if isinstance(c, Rpc)]


def specification_factory(nats_url: str) -> AsyncAPI:
    broker = NatsBroker(nats_url)
    broker.include_router(consumers.build_router())
    for data, stream, description in PUBLISHED:
        broker.publisher(
            event_subject(data.name, "{user_id}"),
            stream=stream,
            schema=Event[data],  # type: ignore[valid-type]
            title=f"gateway:{data.name}",
            description=description,
        )
    for call in _calls():
        broker.publisher(
            call.subject,
            schema=call.request,
            title=f"gateway:{call.subject}",
            description=f"Request/reply with `{call.service}`; the answer is "
            f'`{getattr(call.reply, "__name__", str(call.reply))}` or `{{"error": {{code, message}}}}`',
        )
    return AsyncAPI(broker, title="genimage gateway", version="1.0.0")


def install(app: FastAPI, nats_url: str) -> None:
    router = APIRouter(include_in_schema=False)

    @cache
    def document() -> Any:
        return specification_factory(nats_url).to_specification()

    @router.get(PATH)
    async def asyncapi_page() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(document(), try_it_out_path=None))

    @router.get(f"{PATH}.json")
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(document().to_jsonable())

    app.include_router(router)
