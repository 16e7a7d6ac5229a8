"""The running gallery service fed through JetStream: events out of order and delivered twice
converge; the trash purge's event reaches the GALLERY stream; the projection lag is exported."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery import purge
from gallery.consumers import ensure_consumers
from gallery.models import outbox
from genimage_common import events as ev
from genimage_common.ids import image_id_for, new_id
from genimage_common.outbox import OutboxRelay
from genimage_common.streams import BILLING, GALLERY
from genimage_devstack.stack import ServiceProcess
from tests.api import signup
from tests.polling import eventually

from .conftest import Model
from .factories import Clock, Events
from .flows import image_ids, publish

pytestmark = pytest.mark.e2e


def test_events_out_of_order_and_twice_converge(
    api: httpx.Client, services: dict[str, ServiceProcess], stack_env: dict[str, str]
) -> None:
    user = signup(api, wait_for_credits=None)
    a = Events(user_id=uuid.UUID(user.id), clock=Clock(now=ev.utcnow()))
    gid = new_id()
    image = str(image_id_for(gid, 0))
    requested = a.requested(gid, prompt="a heron in the reeds")
    started, progress, completed = a.started(gid), a.progress(gid, 0.5), a.completed(gid)
    favorited = a.image(ev.ImageFavorited, image_id_for(gid, 0))
    nats_url = stack_env["NATS_URL"]

    # The outcome first: the image shows up before anything else is known about it.
    publish(nats_url, favorited, completed)
    eventually(lambda: image_ids(api, user) == [image], what="image projected before its request")
    got = api.get(f"/v1/images/{image}", headers=user.auth).json()
    assert (got["favorite"], got["prompt"]) == (True, None)
    assert api.get(f"/v1/generations/{gid}", headers=user.auth).status_code == 404

    # Then the older events, and each of them a second time as a redelivery would.
    publish(nats_url, progress, started, requested)
    publish(nats_url, progress, started, completed, favorited, msg_ids=[str(uuid.uuid4()) for _ in range(4)])

    def converged() -> dict | None:
        r = api.get(f"/v1/generations/{gid}", headers=user.auth)
        return r.json() if r.status_code == 200 and r.json()["prompt"] else None

    generation = eventually(converged, what="request projected")
    assert (generation["status"], generation["progress"]) == ("succeeded", 1.0)
    assert [o["id"] for o in generation["outputs"]] == [image]
    got = api.get(f"/v1/images/{image}", headers=user.auth).json()
    assert (got["favorite"], got["prompt"]) == (True, "a heron in the reeds")
    assert image_ids(api, user, q="heron") == [image]


async def test_a_purge_emits_image_deleted_on_the_gallery_stream(
    model: Model, gallery_engine: AsyncEngine, stack_env: dict[str, str]
) -> None:
    a = Events()
    gid = new_id()
    completed = a.completed(gid)
    await model.apply(a.requested(gid), completed, a.image(ev.ImageTrashed, image_id_for(gid, 0)))
    async with model.sessions.begin() as s:
        now = a.clock.now + timedelta(days=31)
        assert await purge.purge_expired(s, now=now, retention=timedelta(days=30)) == 1

    nc = await nats.connect(stack_env["NATS_URL"])
    try:
        js = nc.jetstream()
        relay = OutboxRelay(model.sessions, outbox, js, service=f"gallery-test-{model.schema}")
        assert await relay.relay_once() == 1
        msg = await js.get_last_msg(GALLERY, f"gallery.image_deleted.{a.user_id}")
    finally:
        await nc.close()
    deleted = ev.parse_event(msg.data)
    output = completed.data.outputs[0]
    assert isinstance(deleted.data, ev.ImageDeleted)
    assert deleted.data.image_id == output.image_id
    assert deleted.data.object_keys == [output.object_key, output.thumbnail_key]


def test_projection_lag_is_exported(api: httpx.Client, services: dict[str, ServiceProcess]) -> None:
    signup(api, wait_for_credits=None)  # identity.user_registered passes through the projection

    def lag() -> float | None:
        for line in httpx.get(f"{services['gallery'].url}/metrics").text.splitlines():
            if line.startswith('genimage_projection_lag_seconds{stream="IDENTITY"}'):
                return float(line.split()[-1]) + 1e-9  # truthy even when 0.0
        return None

    assert 0 < eventually(lag, what="lag gauge of IDENTITY") < 60


async def test_a_durable_of_an_older_release_gets_the_new_filter(stack_env: dict[str, str]) -> None:
    """The skeleton's `gallery-billing` only saw credits_committed; binding never updates a filter."""
    durable = f"gallery-test-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(stack_env["NATS_URL"])
    try:
        js = nc.jetstream()
        old = ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject="billing.credits_committed.*",
            ack_policy=AckPolicy.EXPLICIT,
        )
        await js.add_consumer(BILLING, config=old)
        try:
            await ensure_consumers(js, ((BILLING, durable, "billing.>"),))
            info = await js.consumer_info(BILLING, durable)
            assert info.config.filter_subject == "billing.>"
            await ensure_consumers(js, ((BILLING, durable, "billing.>"),))  # already right: unchanged
        finally:
            await js.delete_consumer(BILLING, durable)
    finally:
        await nc.close()
