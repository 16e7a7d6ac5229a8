from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from genimage_common import events as ev
from genimage_common.ids import derived_id, generation_id_for, new_id, transition_event_id

USER = uuid.UUID("11111111-1111-4111-8111-111111111111")
GEN = uuid.UUID("22222222-2222-4222-8222-222222222222")


def requested(**overrides: object) -> ev.GenerationRequested:
    fields = dict(
        user_id=USER,
        generation_id=GEN,
        kind="image",
        prompt="a cat",
        model="local",
        width=512,
        height=512,
        n=1,
        seed=1,
        cost=5,
        hold_expires_at=datetime(2026, 11, 22, 10, 15, tzinfo=UTC),
    )
    fields.update(overrides)
    return ev.GenerationRequested(**fields)


def test_envelope_is_cloudevents_structured_json() -> None:
    event = ev.make_event(requested(), source="genimage/gateway", subject=GEN)
    body = json.loads(event.model_dump_json())
    assert body["specversion"] == "1.0"
    assert body["type"] == "genimage.generation.requested.v1"
    assert body["source"] == "genimage/gateway"
    assert body["subject"] == str(GEN)
    assert body["datacontenttype"] == "application/json"
    assert body["time"].endswith("Z") and "T" in body["time"]
    assert body["data"]["hold_expires_at"] == "2026-11-22T10:15:00.000Z"
    assert uuid.UUID(body["id"])
    assert event.nats_subject == f"generation.requested.{USER}"


def test_parse_event_round_trips_to_the_typed_model() -> None:
    event = ev.make_event(requested(), source="s", subject=GEN)
    parsed = ev.parse_event(event.model_dump_json())
    assert isinstance(parsed.data, ev.GenerationRequested)
    assert parsed == event
    assert len(ev.CATALOG) == 26  # ARCHITECTURE.md §3 plus the gallery's trash and board events (ADR 0030)
    assert all(t.startswith("genimage.") and t.endswith(".v1") for t in ev.CATALOG)


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(ev.UnknownEventType):
        ev.parse_event({"type": "genimage.nope.v1"})


def test_event_models_validate_their_data() -> None:
    with pytest.raises(ValidationError):
        ev.GenerationProgress(user_id=USER, generation_id=GEN, progress=1.5, stage="x")
    with pytest.raises(ValidationError):
        requested(kind="sculpture")
    with pytest.raises(ValidationError):
        ev.CreditsRefunded(user_id=USER, generation_id=GEN, amount=5, reason="because", balance=0)


def test_transition_ids_are_deterministic_and_distinct() -> None:
    assert transition_event_id(GEN, "terminal") == transition_event_id(GEN, "terminal")
    assert transition_event_id(GEN, "terminal") != transition_event_id(GEN, "requested")
    assert generation_id_for(USER, "key-1") == generation_id_for(USER, "key-1")
    assert generation_id_for(USER, "key-1") != generation_id_for(uuid.uuid4(), "key-1")
    assert generation_id_for(USER, None) != generation_id_for(USER, None)
    assert derived_id("a", 1) != derived_id("a", 2)


def test_new_ids_are_time_ordered_uuid7() -> None:
    ids = [new_id() for _ in range(200)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
