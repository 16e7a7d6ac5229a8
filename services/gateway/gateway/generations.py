"""Creating a generation: validate, price, reserve credits, publish ``generation.requested``."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

from genimage_common.errors import ValidationFailed
from genimage_common.events import GenerationRequested, make_event, utcnow
from genimage_common.ids import derived_id, generation_id_for, transition_event_id
from genimage_common.messaging import publish_event, rpc_call
from genimage_common.streams import GENERATION
from genimage_common.subjects import rpc

from .deps import Services
from .schemas import GenerationCreate

SOURCE = "genimage/gateway"


def _seed(body: GenerationCreate, generation_id: uuid.UUID, idempotency_key: str | None) -> int:
    if body.seed is not None:
        return body.seed
    if idempotency_key is not None:
        # A retried request renders the same picture.
        return derived_id("seed", generation_id).int % 2**32
    return random.SystemRandom().randrange(2**32)


async def create(
    services: Services, *, user_id: uuid.UUID, body: GenerationCreate, idempotency_key: str | None
) -> dict[str, Any]:
    model = body.model or "local"
    if model not in services.catalog:
        raise ValidationFailed(
            f"unknown model {model!r}", errors=[{"loc": ["body", "model"], "msg": f"one of {sorted(services.catalog)}"}]
        )
    if body.input_image_ids:
        # Uploads are owned by the gateway; none of these ids is an upload of this user.
        raise ValidationFailed(
            "unknown input image", errors=[{"loc": ["body", "input_image_ids"], "msg": "no such upload"}]
        )
    width, height = body.size()
    units = body.n
    cost = services.pricing.cost(body.kind, units)
    generation_id = generation_id_for(user_id, idempotency_key)
    reply = await rpc_call(
        services.broker,
        rpc("billing", "reserve"),
        {"generation_id": str(generation_id), "user_id": str(user_id), "amount": cost, "units": units},
        timeout=services.settings.rpc_timeout_s,
    )
    requested_at = utcnow()
    data = GenerationRequested(
        user_id=user_id,
        generation_id=generation_id,
        kind=body.kind,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        model=model,
        width=width,
        height=height,
        n=body.n,
        seed=_seed(body, generation_id, idempotency_key),
        aspect_ratio=body.aspect_ratio,
        duration_s=(body.duration_s or 4.0) if body.kind == "video" else None,
        input_image_ids=body.input_image_ids,
        output_format=body.output_format,
        watermark=body.watermark,
        cost=cost,
        hold_expires_at=datetime.fromisoformat(reply["hold"]["expires_at"]),
        requested_at=requested_at,
    )
    event = make_event(
        data, source=SOURCE, subject=generation_id, event_id=transition_event_id(generation_id, "requested")
    )
    await publish_event(services.broker, event, stream=GENERATION)
    return {
        "id": str(generation_id),
        "status": "queued",
        "kind": data.kind,
        "prompt": data.prompt,
        "negative_prompt": data.negative_prompt,
        "model": data.model,
        "width": width,
        "height": height,
        "n": data.n,
        "seed": data.seed,
        "output_format": data.output_format,
        "progress": 0.0,
        "cost": cost,
        "outputs": [],
        "error": None,
        "timings": None,
        "queue_position": None,
        "created_at": requested_at.isoformat(),
    }
