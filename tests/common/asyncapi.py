"""Reading a worker's AsyncAPI document in tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote


def payloads(app: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The channels of ``app``'s document (address → name of its payload schema), and the document."""
    doc = app.schema.to_specification().to_jsonable()
    out = {}
    for channel in doc["channels"].values():
        for message in channel.get("messages", {}).values():
            name = unquote(message["$ref"].split("/")[-1])
            payload = doc["components"]["messages"][name]["payload"].get("$ref", "")
            out[channel["address"]] = unquote(payload.split("/")[-1])
    return out, doc
