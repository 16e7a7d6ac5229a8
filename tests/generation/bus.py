"""Talking to the worker the way the other services do: events on JetStream."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg

from genimage_common.events import (
    Event,
    GenerationCancelRequested,
    GenerationRequested,
    ImageDeleted,
    make_event,
    parse_event,
    utcnow,
)
from genimage_common.ids import new_id, transition_event_id
from genimage_common.streams import DLQ, GALLERY, GENERATION
from tests.jetstream import stream_messages
from tests.polling import eventually_async

T = TypeVar("T")
TERMINAL = {"generation.completed", "generation.failed", "generation.canceled"}


def kind_of(event: Event[Any]) -> str:
    return event.data.name


class Bus:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def request(self, **fields: Any) -> Event[GenerationRequested]:
        """Publish ``generation.requested`` as the gateway does (a fresh user unless given)."""
        gid = fields.pop("generation_id", None) or new_id()
        data = GenerationRequested(
            **{
                "user_id": uuid.uuid4(),
                "generation_id": gid,
                "kind": "image",
                "prompt": "a lighthouse on a cliff at sunset",
                "model": "local",
                "width": 256,
                "height": 256,
                "n": 1,
                "seed": 7,
                "cost": 5,
                "hold_expires_at": utcnow() + timedelta(minutes=15),
                "requested_at": utcnow(),
                **fields,
            }
        )
        event = make_event(data, source="tests", subject=gid, event_id=transition_event_id(gid, "requested"))
        await self.publish(event, GENERATION)
        return event

    async def publish(self, event: Event[Any], stream: str, *, msg_id: str | None = None) -> None:
        await self.js.publish(
            event.nats_subject,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or str(event.id)},
            stream=stream,
        )

    async def cancel(self, user_id: uuid.UUID, generation_id: uuid.UUID) -> None:
        data = GenerationCancelRequested(user_id=user_id, generation_id=generation_id)
        event = make_event(
            data, source="tests", subject=generation_id, event_id=transition_event_id(generation_id, "cancel_requested")
        )
        await self.publish(event, GENERATION)

    async def image_deleted(self, user_id: uuid.UUID, keys: list[str]) -> None:
        event = make_event(
            ImageDeleted(user_id=user_id, image_id=new_id(), object_keys=keys), source="tests", subject=user_id
        )
        await self.publish(event, GALLERY)

    async def messages(self, subject: str, stream: str) -> list[Msg]:
        """Every message of ``stream`` on ``subject`` so far (what consumers will see)."""
        return await stream_messages(self.js, subject, stream)

    async def events(self, user_id: uuid.UUID) -> list[Event[Any]]:
        """The user's generation events in stream order (requested included)."""
        return [parse_event(m.data) for m in await self.messages(f"generation.*.{user_id}", GENERATION)]

    async def terminal(self, user_id: uuid.UUID, *, timeout: float = 30.0) -> Event[Any]:
        async def probe() -> Event[Any] | None:
            return next((e for e in await self.events(user_id) if kind_of(e) in TERMINAL), None)

        return await eventually_async(probe, timeout=timeout, what=f"terminal event of user {user_id}")

    async def dead_letters(self, subject: str) -> list[Msg]:
        msgs = await self.messages("dlq.GENERATION.generation-requested", DLQ)
        return [m for m in msgs if (m.headers or {}).get("Genimage-Dlq-Subject") == subject]
