"""Stats agree with the lists they summarize (issue 10): a generation the gallery knows only from
billing — the refund of a hold whose ``generation.requested`` was never published (the gateway's
compensation, or the expiry backstop's ``failed`` after it) — is in neither."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from gallery import repository
from genimage_common import events as ev
from genimage_common.errors import NotFound
from genimage_common.ids import new_id, transition_event_id

from .conftest import Model
from .factories import Events


def expired(a: Events, gid: uuid.UUID) -> ev.Event[Any]:
    """What the generation service's backstop publishes when billing refunds an expired hold."""
    data = ev.GenerationFailed(
        user_id=a.user_id,
        generation_id=gid,
        error=ev.ErrorInfo(code="expired", message="the hold expired", retryable=True),
        attempts=0,
    )
    return a._event(data, subject=gid, event_id=transition_event_id(gid, "terminal"))


async def listed(model: Model, user_id: uuid.UUID) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        async with model.sessions() as s:
            page = await repository.list_generations(s, user_id=user_id, limit=2, cursor=cursor)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_generations_known_only_from_billing_are_neither_listed_nor_counted(model: Model) -> None:
    a = Events()
    done, failed, queued, canceled = new_id(), new_id(), new_id(), new_id()
    released, expired_unsent, expired_late = new_id(), new_id(), new_id()
    await model.apply(
        a.requested(done, cost=5),
        a.completed(done),
        a.committed(done, 5),
        a.requested(failed, cost=3),
        a.failed(failed),
        a.refunded(failed, 3),
        a.requested(canceled, cost=2),
        a.canceled(canceled),
        a.refunded(canceled, 2, reason="canceled"),
        # Reserved, never queued: the gateway released the hold at once (refund `failed`)...
        a.refunded(released, 4),
        # ... or could not, and the hold expired: billing refunds, the backstop fails it.
        a.refunded(expired_unsent, 6, reason="expired"),
        expired(a, expired_unsent),
        a.requested(queued, cost=7),
    )
    # An accepted generation whose hold expired while it was queued: listed and counted.
    await model.apply(
        a.requested(expired_late, cost=1), a.refunded(expired_late, 1, reason="expired"), expired(a, expired_late)
    )

    items = await listed(model, a.user_id)
    async with model.sessions() as s:
        stats = await repository.stats(s, user_id=a.user_id)
        for ghost in (released, expired_unsent):
            with pytest.raises(NotFound):
                await repository.get_generation(s, user_id=a.user_id, generation_id=ghost)

    assert {i["id"] for i in items} == {str(g) for g in (done, failed, queued, canceled, expired_late)}
    by_status = Counter(i["status"] for i in items)
    assert stats["generations"] == {
        **{status: by_status.get(status, 0) for status in repository.STATUSES},
        "total": len(items),
    }
    assert stats["generations"] == {
        "queued": 1,
        "running": 0,
        "succeeded": 1,
        "failed": 2,
        "canceled": 1,
        "total": 5,
    }
    # Spent: what the listed generations were charged (a refund is not spending).
    assert stats["credits_spent"] == sum(i["cost"] for i in items if i["refunded"] is None and i["status"] != "queued")
    assert stats["credits_spent"] == 5
    # The ghosts queue before nothing: the queued generation is first in line.
    assert [i["queue_position"] for i in items if i["status"] == "queued"] == [0]
