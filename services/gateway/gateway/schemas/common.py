"""What every resource's bodies share: strict request bodies and cursor pages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def examples(*items: dict[str, Any], **config: Any) -> ConfigDict:
    """A model's configuration with the examples the OpenAPI document shows."""
    return ConfigDict(json_schema_extra={"examples": list(items)}, **config)  # type: ignore[typeddict-item]
