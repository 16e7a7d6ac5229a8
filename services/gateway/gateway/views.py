"""Turn the gallery's read model into public resources: no object keys, links instead."""

from __future__ import annotations

from typing import Any


def image(raw: dict[str, Any], base_url: str) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if k not in ("object_key", "thumbnail_key", "user_id")}
    out["url"] = f"{base_url}/v1/images/{raw['id']}/content"
    out["thumbnail_url"] = f"{out['url']}?variant=thumbnail"
    return out


def generation(raw: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {**raw, "outputs": [image(o, base_url) for o in raw.get("outputs", [])]}
