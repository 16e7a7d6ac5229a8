"""NATS subjects: ``<domain>.<event>.<user_id>`` for events, ``rpc.<service>.<verb>`` for requests."""

from __future__ import annotations

from uuid import UUID

IDENTITY_ALL = "identity.>"
GENERATION_ALL = "generation.>"
BILLING_ALL = "billing.>"
GALLERY_ALL = "gallery.>"


def event_subject(name: str, user_id: UUID | str) -> str:
    """``name`` is ``<domain>.<event>`` (e.g. ``generation.completed``)."""
    return f"{name}.{user_id}"


def any_user(name: str) -> str:
    """Filter matching one event type of every user."""
    return f"{name}.*"


def user_domain(domain: str, user_id: UUID | str) -> str:
    """Filter matching every event of one domain (``generation``...) of one user."""
    return f"{domain}.*.{user_id}"


def user_events(user_id: UUID | str) -> list[str]:
    """Every event subject of one user, across domains (SSE feeds)."""
    return [user_domain(domain, user_id) for domain in ("generation", "billing", "gallery")]


def event_name(subject: str) -> str:
    """The event name (``<domain>.<event>``) of an event subject."""
    return ".".join(subject.split(".")[:2])


def rpc(service: str, verb: str) -> str:
    return f"rpc.{service}.{verb}"


def dead_letter(stream: str, consumer: str) -> str:
    return f"dlq.{stream}.{consumer}"
