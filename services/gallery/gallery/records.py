"""Rows of the read model in the shape of the shared read models (``genimage_common.contracts.
records``): what the RPC handlers answer, as JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def image_dict(r: Row[Any]) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "generation_id": str(r.generation_id),
        "index": r.index,
        "kind": r.kind,
        "prompt": r.prompt,
        "content_type": r.content_type,
        "width": r.width,
        "height": r.height,
        "bytes": r.bytes,
        "sha256": r.sha256,
        "duration_s": r.duration_s,
        "favorite": r.favorite,
        "published": r.published,
        "published_at": _iso(r.published_at),
        "trashed_at": _iso(r.trashed_at),
        "board_ids": [str(b) for b in getattr(r, "board_ids", None) or []],
        "created_at": _iso(r.created_at),
        "object_key": r.object_key,
        "thumbnail_key": r.thumbnail_key,
    }


def generation_dict(r: Row[Any], outputs: list[dict[str, Any]], queue_position: int | None) -> dict[str, Any]:
    if r.charged is not None:
        cost = r.charged
    elif r.refunded is not None:
        cost = 0  # voided: nothing was charged
    else:
        cost = r.cost
    return {
        "id": str(r.id),
        "status": r.status,
        "kind": r.kind,
        "prompt": r.prompt,
        "negative_prompt": r.negative_prompt,
        "model": r.model,
        "width": r.width,
        "height": r.height,
        "n": r.n,
        "seed": r.seed,
        "output_format": r.output_format,
        "progress": r.progress,
        "cost": cost,
        "refunded": r.refunded,
        "provider": r.provider,
        "outputs": outputs,
        "error": r.error,
        "timings": r.timings,
        "queue_position": queue_position,
        "created_at": _iso(r.requested_at or r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "updated_at": _iso(r.updated_at),
    }


def board_dict(r: Row[Any]) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "image_count": r.image_count,
        "created_at": _iso(r.created_at),
    }


def public_image(r: Row[Any]) -> dict[str, Any]:
    """What anyone may see of a published image: no owner, no generation, no private flag."""
    return {
        "id": str(r.id),
        "kind": r.kind,
        "prompt": r.prompt,
        "content_type": r.content_type,
        "width": r.width,
        "height": r.height,
        "duration_s": r.duration_s,
        "created_at": _iso(r.created_at),
        "published_at": _iso(r.published_at),
    }
