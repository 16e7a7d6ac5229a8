"""Every error is RFC 9457 problem+json with a stable ``code`` — domain errors, validation
errors, unknown routes and crashes alike."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genimage_common.errors import DomainError
from genimage_common.redelivery import is_transient

from .errors import RateLimited

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TRANSIENT_RETRY_AFTER_S = 2

HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Validation error"),
    429: ("rate_limited", "Too many requests"),
    503: ("service_unavailable", "Service unavailable"),
}


def problem_body(status: int, code: str, title: str, detail: str | None, path: str, **extra: Any) -> dict[str, Any]:
    # The RFC 9457 members win over any same-named field an error carries.
    return {
        **extra,
        "type": f"https://genimage.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": path,
    }


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None,
    request: Request,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, request.url.path, **extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_headers(exc: DomainError) -> dict[str, str] | None:
    if exc.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    retry_after = exc.fields.get("retry_after")
    if exc.status == 503 and isinstance(retry_after, int) and retry_after > 0:
        return {"Retry-After": str(retry_after)}
    return None


def domain_problem(exc: DomainError, request: Request) -> JSONResponse:
    return problem(exc.status, exc.code, exc.title, exc.message, request, error_headers(exc), **exc.fields)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return problem(
            422, "validation_error", "Validation error", "the request is not valid", request, errors=errors[:20]
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem(exc.status_code, code, title, detail, request, dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            # A dependency away (a lost database connection, NATS reconnecting): the request may
            # succeed when retried, which a 500 does not say.
            log.warning("dependency unavailable", extra={"path": request.url.path, "error": repr(exc)[:300]})
            return problem(
                503,
                "service_unavailable",
                "Service unavailable",
                "a dependency is unavailable; retry later",
                request,
                {"Retry-After": str(TRANSIENT_RETRY_AFTER_S)},
                retry_after=TRANSIENT_RETRY_AFTER_S,
            )
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal_error", "Internal error", None, request)
