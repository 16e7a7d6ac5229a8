"""Billing test data: funded users and the generation events billing consumes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from billing import ledger
from genimage_common.database import SessionMaker
from genimage_common.events import (
    Event,
    EventData,
    GenerationCanceled,
    GenerationCompleted,
    GenerationFailed,
    Output,
    Timings,
    UserRegistered,
    make_event,
)
from genimage_common.ids import image_id_for, new_id, transition_event_id


async def funded_user(sessions: SessionMaker, credits: int) -> uuid.UUID:
    """A user with an account holding ``credits`` available (an admin grant, no signup grant)."""
    user_id = new_id()
    async with sessions.begin() as session:
        await ledger.open_account(session, user_id=user_id, signup_grant=0)
        if credits:
            await ledger.grant(session, user_id=user_id, amount=credits, reason="admin", reference=f"fund-{user_id}")
    return user_id


def registered(user_id: uuid.UUID) -> Event[UserRegistered]:
    data = UserRegistered(user_id=user_id, email=f"{user_id.hex[:8]}@example.com", registered_at=datetime.now(UTC))
    event_id = transition_event_id(user_id, "registered")
    return make_event(data, source="genimage/gateway", subject=user_id, event_id=event_id)


def _output(generation_id: uuid.UUID, user_id: uuid.UUID, index: int) -> Output:
    key = f"users/{user_id}/generations/{generation_id}/{index}"
    return Output(
        image_id=image_id_for(generation_id, index),
        index=index,
        object_key=f"{key}.png",
        thumbnail_key=f"{key}.thumb.webp",
        content_type="image/png",
        width=64,
        height=64,
        bytes=100,
        sha256="0" * 64,
    )


def completed(
    user_id: uuid.UUID, generation_id: uuid.UUID, *, outputs: int = 1, event_id: uuid.UUID | None = None
) -> Event[GenerationCompleted]:
    data = GenerationCompleted(
        user_id=user_id,
        generation_id=generation_id,
        outputs=[_output(generation_id, user_id, i) for i in range(outputs)],
        provider="local",
        model="local",
        seed=1,
        timings=Timings(queue_ms=1, run_ms=1),
    )
    return _terminal(data, generation_id, event_id)


def failed(
    user_id: uuid.UUID, generation_id: uuid.UUID, *, event_id: uuid.UUID | None = None
) -> Event[GenerationFailed]:
    data = GenerationFailed(
        user_id=user_id, generation_id=generation_id, error={"code": "provider_error", "message": "boom"}
    )
    return _terminal(data, generation_id, event_id)


def canceled(
    user_id: uuid.UUID, generation_id: uuid.UUID, *, event_id: uuid.UUID | None = None
) -> Event[GenerationCanceled]:
    data = GenerationCanceled(user_id=user_id, generation_id=generation_id)
    return _terminal(data, generation_id, event_id)


async def publish(js, event: Event, *, stream: str, msg_id: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Publish ``event`` like its producer does; another ``msg_id`` makes JetStream keep a second copy
    (a redelivered or re-published duplicate, as billing sees it)."""
    await js.publish(
        event.nats_subject,
        event.model_dump_json().encode(),
        stream=stream,
        headers={"Nats-Msg-Id": msg_id or str(event.id), "content-type": "application/json"},
    )


def _terminal(data: EventData, generation_id: uuid.UUID, event_id: uuid.UUID | None) -> Event[Any]:
    """As the worker publishes an outcome: one event id per generation, unless given another."""
    return make_event(
        data,
        source="genimage/generation",
        subject=generation_id,
        event_id=event_id or transition_event_id(generation_id, "terminal"),
    )
