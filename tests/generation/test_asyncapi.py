"""The worker's AsyncAPI document shows every channel it consumes with its payload schema, the
job intake included (a hand-written pull loop, declared for the document only)."""

from __future__ import annotations

from generation.app import create_app
from tests.common.asyncapi import payloads


def test_the_intake_and_every_consumer_have_their_payload_schema() -> None:
    got, doc = payloads(create_app())
    assert got["generation.requested.*"] == "Event[GenerationRequested]"
    assert got["generation.cancel_requested.*"] == "Event[GenerationCancelRequested]"
    assert got["billing.credits_refunded.*"] == "Event[CreditsRefunded]"
    assert got["gallery.image_deleted.*"] == "Event[ImageDeleted]"
    requested = doc["components"]["schemas"]["GenerationRequested"]
    assert {"generation_id", "prompt", "model", "cost", "hold_expires_at"} <= set(requested["properties"])
    assert len(doc["servers"]) == 1  # the documentation-only declaration adds no server
