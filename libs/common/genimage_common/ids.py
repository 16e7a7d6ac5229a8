"""Identifiers: time-ordered UUIDv7 for new rows, UUIDv5 where a retry must map to the same id."""

from __future__ import annotations

import uuid

import uuid6

# Fixed namespace so that derived ids are stable across services and releases.
NAMESPACE = uuid.UUID("6f1c1f0e-3a57-4d52-9a55-2f8b7c0e9a11")


def new_id() -> uuid.UUID:
    """A time-ordered id (UUIDv7): sorts by creation time, indexes well."""
    return uuid.UUID(str(uuid6.uuid7()))


def derived_id(*parts: object) -> uuid.UUID:
    """A deterministic id from its parts, for things that must dedupe on retry."""
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


def generation_id_for(user_id: uuid.UUID, idempotency_key: str | None) -> uuid.UUID:
    """A client retry with the same idempotency key maps to the same generation."""
    if idempotency_key is None:
        return new_id()
    return derived_id("generation", user_id, idempotency_key)


def image_id_for(generation_id: uuid.UUID, index: int) -> uuid.UUID:
    return derived_id("image", generation_id, index)


def transition_event_id(entity_id: uuid.UUID, transition: str) -> uuid.UUID:
    """Event id of a state transition: a re-published transition is deduplicated by JetStream."""
    return derived_id("event", entity_id, transition)
