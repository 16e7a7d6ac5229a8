"""OpenAPI descriptions of the problem+json error responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {"model": Problem, "content": {"application/problem+json": {}}, "description": "Problem details"}
        for s in statuses
    }
