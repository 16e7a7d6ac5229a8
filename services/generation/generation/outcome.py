"""The one protocol by which a generation ends, for the job itself and for the event handlers
that end it from outside (a cancel request, an expired hold):

1. record the terminal event in the state bucket, create-if-absent (``JobState.settle``): the
   first outcome recorded is the outcome, whoever records it;
2. publish the recorded outcome (ours or the one that won; its event id is the same on every
   replica, so JetStream deduplicates a re-publish);
3. count it once, by whoever recorded it (``genimage_generations_total``).

An outcome recorded by an event handler that does not know the request (a cancel, an expired
hold) is counted with ``kind`` and ``model`` ``"unknown"``: the request is all that names them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from genimage_common.contracts.status import STATUS_AFTER
from genimage_common.events import Event, EventData, make_event
from genimage_common.ids import transition_event_id
from genimage_common.messaging import publish_event
from genimage_common.streams import GENERATION

from .context import JobContext
from .metrics import GENERATIONS

SOURCE = "genimage/generation"


@dataclass(frozen=True)
class Labels:
    kind: str = "unknown"
    model: str = "unknown"


UNKNOWN = Labels()


def terminal_event(data: EventData) -> Event[Any]:
    """The terminal event of a generation: one event id per generation, whatever the outcome."""
    gid: uuid.UUID = data.generation_id  # type: ignore[attr-defined]
    return make_event(data, source=SOURCE, subject=gid, event_id=transition_event_id(gid, "terminal"))


async def settle(
    ctx: JobContext,
    event: Event[Any],
    *,
    labels: Labels = UNKNOWN,
    publish_other: bool = True,
    on_other: Callable[[Event[Any]], Awaitable[object]] | None = None,
) -> tuple[Event[Any], bool]:
    """Record ``event`` as the outcome unless one is recorded, publish the recorded one and count
    it if it is ours: (the outcome, whether it is ours).

    When another outcome was recorded first: ``on_other`` runs with it (a completion discards its
    outputs), and it is published again unless ``publish_other`` is false.
    """
    stored, won = await ctx.state.settle(event.data.generation_id, event)
    other = stored.type != event.type
    if other and on_other is not None:
        await on_other(stored)
    if publish_other or not other:
        await publish_event(ctx.broker, stored, stream=GENERATION)
    if won:
        GENERATIONS.labels(kind=labels.kind, model=labels.model, status=STATUS_AFTER[stored.data.name]).inc()
    return stored, won
