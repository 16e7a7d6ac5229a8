"""Gallery flows through the public API and JetStream, for the tests that run the services."""

from __future__ import annotations

from typing import Any

import httpx
import nats

from genimage_common.events import Event
from genimage_common.messaging import JSON
from tests.aio import run_sync
from tests.api import TestUser, wait_terminal


def generate(api: httpx.Client, user: TestUser, prompt: str, *, n: int = 1) -> list[dict[str, Any]]:
    """Run one generation to the end; its images."""
    r = api.post(
        "/v1/generations", headers=user.auth, json={"prompt": prompt, "n": n, "width": 64, "height": 64, "seed": 3}
    )
    assert r.status_code == 202, r.text
    done = wait_terminal(api, user, r.json()["id"])
    assert done["status"] == "succeeded", done
    return done["outputs"]


def image_ids(api: httpx.Client, user: TestUser, **params: Any) -> list[str]:
    r = api.get("/v1/images", headers=user.auth, params=params)
    assert r.status_code == 200, r.text
    return [i["id"] for i in r.json()["items"]]


def publish(nats_url: str, *events: Event[Any], msg_ids: list[str] | None = None) -> None:
    """Publish events to their streams as their producers do (``Nats-Msg-Id`` = event id,
    unless ``msg_ids`` gives another: a second copy that JetStream does not deduplicate)."""

    async def run() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for i, event in enumerate(events):
                msg_id = msg_ids[i] if msg_ids else str(event.id)
                await js.publish(
                    event.nats_subject,
                    event.model_dump_json().encode(),
                    stream=event.data.name.split(".")[0].upper(),
                    headers={"Nats-Msg-Id": msg_id, **JSON},
                )
        finally:
            await nc.close()

    run_sync(run())
