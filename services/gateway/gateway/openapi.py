"""The served OpenAPI document: every operation lists the problem+json errors any request
can meet (rate limits, body limits, authentication, validation, dependencies) and the
RateLimit headers, whatever its route file declares."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .routes.responses import DESCRIPTIONS, Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OPERATIONS_WITHOUT_LIMITS = {"/healthz", "/readyz", "/metrics"}
RATE_HEADERS = {
    "RateLimit": {
        "description": 'Remaining quota of each policy, e.g. `"user";r=2999;t=1` '
        "(draft-ietf-httpapi-ratelimit-headers)",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The policies that applied, e.g. `"user";q=3000;w=60`',
        "schema": {"type": "string"},
    },
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS.get(status, "Problem details"),
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }


def _complete(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if path in OPERATIONS_WITHOUT_LIMITS:
        return
    statuses = {429, 500, 503}
    if operation.get("security"):
        statuses.add(401)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if operation.get("requestBody"):
        statuses.add(413)
    for status in statuses:
        responses.setdefault(str(status), _problem_response(status))
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            # Errors are problem+json only, never FastAPI's default JSON shape.
            response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
            response.setdefault("description", DESCRIPTIONS.get(int(status), "Problem details"))
        headers = response.setdefault("headers", {})
        headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS})
        if status == "429":
            headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in RETRY_AFTER})


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
        )
        schema.setdefault("components", {})["headers"] = {**RATE_HEADERS, **RETRY_AFTER}
        components = schema["components"].setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    _complete(path, operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
