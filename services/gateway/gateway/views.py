"""Turn internal records into public resources: no object keys, links instead."""

from __future__ import annotations

from typing import Any

from genimage_common.events import Event

# Status a generation has once this event happened.
STATUS_AFTER = {
    "generation.requested": "queued",
    "generation.started": "running",
    "generation.progress": "running",
    "generation.completed": "succeeded",
    "generation.failed": "failed",
    "generation.canceled": "canceled",
}
TERMINAL_EVENTS = frozenset({"generation.completed", "generation.failed", "generation.canceled"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


def image(raw: dict[str, Any], base_url: str) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if k not in ("object_key", "thumbnail_key", "user_id")}
    out["url"] = f"{base_url}/v1/images/{raw['id']}/content"
    out["thumbnail_url"] = f"{out['url']}?variant=thumbnail"
    return out


def generation(raw: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {**raw, "outputs": [image(o, base_url) for o in raw.get("outputs", [])]}


FEED_FIELDS = ("id", "kind", "prompt", "content_type", "width", "height", "duration_s", "created_at", "published_at")


def feed_image(raw: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A published image for the public feed: an allow-list of fields, public content links."""
    out = {k: raw.get(k) for k in FEED_FIELDS}
    out["url"] = f"{base_url}/v1/feed/{raw['id']}/content"
    out["thumbnail_url"] = f"{out['url']}?variant=thumbnail"
    return out


def event_data(event: Event[Any], base_url: str) -> dict[str, Any]:
    """An event's ``data`` as a client may see it (SSE, webhooks)."""
    data = event.data.model_dump(mode="json")
    name = event.data.name
    if name == "generation.completed":
        outputs = []
        for o in data.get("outputs", []):
            public = {k: v for k, v in o.items() if k not in ("object_key", "thumbnail_key")}
            public["url"] = f"{base_url}/v1/images/{o['image_id']}/content"
            public["thumbnail_url"] = f"{public['url']}?variant=thumbnail"
            outputs.append(public)
        data["outputs"] = outputs
    elif name == "gallery.image_deleted":
        data.pop("object_keys", None)
    if name in STATUS_AFTER:
        data["status"] = STATUS_AFTER[name]
    return data


def public_event(event: Event[Any], base_url: str) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "type": event.data.name,
        "time": event.model_dump(mode="json")["time"],
        "data": event_data(event, base_url),
    }
