"""Presenters: what the services hand the gateway (the gallery's and billing's read models,
events, identity rows) turned into the public resources of ``/v1``, one function per resource.
Nothing internal leaves: no object keys, no owner ids on public images; links instead.

Every link is built by ``Links`` from one base URL (see ``Links``), and every image, in any
resource or event, gets its ``url`` / ``thumbnail_url`` pair from ``Links.content``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request

from genimage_common.contracts.billing import Plan as PlanRecord
from genimage_common.contracts.gallery import Stats
from genimage_common.contracts.records import (
    Balance,
    BoardRecord,
    GenerationRecord,
    ImageRecord,
    LedgerLine,
    PublicImage,
)
from genimage_common.contracts.status import STATUS_AFTER
from genimage_common.events import Event, GenerationCompleted, ImageDeleted

from .identity import User
from .schemas.billing import Plan
from .schemas.boards import BoardOut
from .schemas.credits import Credits, LedgerEntry
from .schemas.generations import GenerationOut
from .schemas.identity import ApiKeyCreated, ApiKeyOut, UserOut
from .schemas.images import FeedImageOut, GalleryImageOut, ImageOut
from .schemas.stats import StatsOut
from .schemas.webhooks import WebhookDeliveryOut
from .settings import GatewaySettings


class Links:
    """The public base URL rule: a response links back to the host its client called (the
    address that client can reach, whatever proxy or port it came through); what is sent
    outside any request (a webhook, delivered later by a background task) links to the
    configured ``GATEWAY_PUBLIC_URL``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    @classmethod
    def of_request(cls, request: Request) -> Links:
        return cls(str(request.base_url))

    @classmethod
    def configured(cls, settings: GatewaySettings) -> Links:
        return cls(settings.public_url)

    @staticmethod
    def content(url: str) -> dict[str, str]:
        """The link pair of an image: the original, and its thumbnail variant."""
        return {"url": url, "thumbnail_url": f"{url}?variant=thumbnail"}

    def image(self, image_id: uuid.UUID | str) -> dict[str, str]:
        """An image of its owner's gallery (authenticated, redirects to a presigned URL)."""
        return self.content(f"{self.base_url}/v1/images/{image_id}/content")

    def feed_image(self, image_id: uuid.UUID | str) -> dict[str, str]:
        """A published image, for anyone."""
        return self.content(f"{self.base_url}/v1/feed/{image_id}/content")


def generation_location(generation_id: uuid.UUID | str) -> str:
    """The ``Location`` of a generation (relative, as RFC 9110 allows)."""
    return f"/v1/generations/{generation_id}"


# --- generations and images -------------------------------------------------------------------


def generation(record: GenerationRecord, links: Links) -> GenerationOut:
    return GenerationOut.model_validate({**record.model_dump(), "outputs": [output(o, links) for o in record.outputs]})


def output(record: ImageRecord, links: Links) -> ImageOut:
    """An image as a generation lists it."""
    return ImageOut.model_validate({**record.model_dump(), **links.image(record.id)})


def image(record: ImageRecord, links: Links) -> GalleryImageOut:
    """An image of the user's gallery (trash and boards included)."""
    return GalleryImageOut.model_validate({**record.model_dump(), **links.image(record.id)})


def feed_image(record: PublicImage, links: Links) -> FeedImageOut:
    """A published image for the public feed: only the public fields, public content links."""
    return FeedImageOut.model_validate({**record.model_dump(), **links.feed_image(record.id)})


def board(record: BoardRecord) -> BoardOut:
    return BoardOut.model_validate(record.model_dump())


def stats(record: Stats) -> StatsOut:
    return StatsOut.model_validate(record.model_dump())


# --- credits ------------------------------------------------------------------------------------


def credits(balance: Balance) -> Credits:
    return Credits(available=balance.available, reserved=balance.reserved)


def ledger_entry(line: LedgerLine) -> LedgerEntry:
    return LedgerEntry.model_validate(line.model_dump())


def plan(record: PlanRecord) -> Plan:
    return Plan.model_validate(record.model_dump())


# --- identity ---------------------------------------------------------------------------------


def user(found: User) -> UserOut:
    return UserOut(id=found.id, email=found.email, role=found.role, created_at=found.created_at)  # type: ignore[arg-type]


def api_key(row: Any) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at, last_used_at=row.last_used_at
    )


def created_api_key(row: Any, key: str) -> ApiKeyCreated:
    """A new key: the only time its secret is shown."""
    return ApiKeyCreated(**api_key(row).model_dump(), key=key)


def webhook_delivery(row: Any) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=row.id,
        generation_id=row.generation_id,
        event_type=row.event_type,
        url=row.url,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        # A time for the next attempt only means something while one is due.
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


# --- events (Server-Sent Events and webhooks) --------------------------------------------------


def event_data(event: Event[Any], links: Links) -> dict[str, Any]:
    """An event's ``data`` as a client may see it: outputs with links instead of object keys,
    no object keys of purged images, and the generation's status after it."""
    data = event.data.model_dump(mode="json")
    if isinstance(event.data, GenerationCompleted):
        data["outputs"] = [
            {**{k: v for k, v in o.items() if k not in ("object_key", "thumbnail_key")}, **links.image(o["image_id"])}
            for o in data.get("outputs", [])
        ]
    elif isinstance(event.data, ImageDeleted):
        data.pop("object_keys", None)
    status = STATUS_AFTER.get(event.data.name)
    if status is not None:
        data["status"] = status.value
    return data


def event(event: Event[Any], links: Links) -> dict[str, Any]:
    """An event as a Server-Sent Events feed sends it."""
    return {
        "id": str(event.id),
        "type": event.data.name,
        "time": event.model_dump(mode="json")["time"],
        "data": event_data(event, links),
    }
