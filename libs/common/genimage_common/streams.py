"""JetStream streams: one per domain plus the dead-letter stream, created or updated idempotently."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from .settings import CommonSettings

log = logging.getLogger(__name__)

IDENTITY = "IDENTITY"
GENERATION = "GENERATION"
BILLING = "BILLING"
GALLERY = "GALLERY"
DLQ = "DLQ"

SUBJECTS: dict[str, list[str]] = {
    IDENTITY: ["identity.>"],
    GENERATION: ["generation.>"],
    BILLING: ["billing.>"],
    GALLERY: ["gallery.>"],
    DLQ: ["dlq.>"],
}


def stream_configs(settings: CommonSettings) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_bytes=settings.stream_max_bytes,
            max_age=settings.stream_max_age_s,
            num_replicas=settings.stream_replicas,
            duplicate_window=settings.stream_duplicate_window_s,
        )
        for name, subjects in SUBJECTS.items()
    ]


async def ensure_streams(js: JetStreamContext, settings: CommonSettings) -> None:
    """Create missing streams, bring existing ones to the configured limits. Safe to run concurrently."""
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("stream created", extra={"stream": config.name})
                continue
            except BadRequestError:  # another replica created it in between
                await js.stream_info(config.name)
        await js.update_stream(config)
