"""The presenters: one image-URL rule, one base URL, nothing internal in a public resource."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gateway import presenters
from gateway.presenters import Links
from gateway.settings import GatewaySettings
from genimage_common.contracts.records import GenerationRecord, ImageRecord
from genimage_common.contracts.status import GenerationStatus
from genimage_common.events import GenerationCompleted, Output, Timings, make_event

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _image(image_id: uuid.UUID, generation_id: uuid.UUID) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        generation_id=generation_id,
        index=0,
        kind="image",
        prompt="p",
        content_type="image/png",
        width=64,
        height=64,
        bytes=10,
        sha256="0" * 64,
        favorite=False,
        published=False,
        created_at=NOW,
        object_key="users/u/generations/g/0.png",
        thumbnail_key="users/u/generations/g/0.thumb.webp",
    )


def test_links_come_from_one_base_url() -> None:
    links = Links("https://api.example.com/")
    image_id = uuid.uuid4()
    assert links.image(image_id) == {
        "url": f"https://api.example.com/v1/images/{image_id}/content",
        "thumbnail_url": f"https://api.example.com/v1/images/{image_id}/content?variant=thumbnail",
    }
    assert links.feed_image(image_id)["thumbnail_url"] == (
        f"https://api.example.com/v1/feed/{image_id}/content?variant=thumbnail"
    )
    settings = GatewaySettings.model_construct(public_url="https://public.example.com")
    assert Links.configured(settings).base_url == "https://public.example.com"


def test_a_generation_shows_links_not_object_keys() -> None:
    generation_id, image_id = uuid.uuid4(), uuid.uuid4()
    record = GenerationRecord(
        id=generation_id,
        status=GenerationStatus.SUCCEEDED,
        kind="image",
        prompt="p",
        model="local",
        width=64,
        height=64,
        n=1,
        seed=1,
        progress=1.0,
        cost=5,
        outputs=[_image(image_id, generation_id)],
        timings=Timings(queue_ms=1, run_ms=2),
        created_at=NOW,
    )
    out = presenters.generation(record, Links("http://gw")).model_dump(mode="json")
    assert out["status"] == "succeeded" and out["timings"] == {"queue_ms": 1, "run_ms": 2}
    (image,) = out["outputs"]
    assert image["url"] == f"http://gw/v1/images/{image_id}/content"
    assert "object_key" not in image and "thumbnail_key" not in image


def test_an_event_shows_the_status_it_leads_to_and_no_object_keys() -> None:
    user_id, generation_id, image_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    output = Output(
        image_id=image_id,
        index=0,
        object_key="k",
        thumbnail_key="t",
        content_type="image/png",
        width=64,
        height=64,
        bytes=10,
        sha256="0" * 64,
    )
    data = GenerationCompleted(
        user_id=user_id,
        generation_id=generation_id,
        outputs=[output],
        provider="local",
        model="local",
        seed=1,
        timings=Timings(queue_ms=1, run_ms=2),
    )
    public = presenters.event(make_event(data, source="test", subject=generation_id), Links("http://gw"))
    assert public["type"] == "generation.completed" and public["data"]["status"] == "succeeded"
    (shown,) = public["data"]["outputs"]
    assert shown["url"] == f"http://gw/v1/images/{image_id}/content"
    assert "object_key" not in shown and "thumbnail_key" not in shown
