"""OpenAPI descriptions of the problem+json error responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """RFC 9457 problem details; some problems carry more fields (``errors``, ``available``...)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://genimage.dev/problems/insufficient_credits",
                    "title": "Insufficient credits",
                    "status": 402,
                    "code": "insufficient_credits",
                    "detail": "5 credits needed, 0 available",
                    "instance": "/v1/generations",
                    "available": 0,
                    "requested": 5,
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    code: str = Field(description="Stable, machine-readable")
    detail: str | None = None
    instance: str | None = None


DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked credential (`unauthorized`)",
    402: "Not enough credits (`insufficient_credits`)",
    403: "Not allowed for this role (`forbidden`)",
    404: "Not found — also for another user's resources (`not_found`)",
    409: "Conflict with the resource's state (`conflict`, `idempotency_key_in_use`)",
    413: "Body or image too large (`payload_too_large`)",
    415: "Unsupported file type (`unsupported_media_type`)",
    422: "Invalid request (`validation_error`, `idempotency_key_reused`)",
    429: "Rate or concurrency limit reached (`rate_limited`); see `Retry-After`",
    500: "Unexpected error (`internal_error`)",
    503: "A dependency is unavailable (`service_unavailable`); retry later",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": DESCRIPTIONS.get(s, "Problem details"),
        }
        for s in statuses
    }
