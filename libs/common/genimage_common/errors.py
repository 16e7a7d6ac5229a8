"""One error base for the whole system.

Domain code raises these; the gateway turns them into RFC 9457 problem+json and
request/reply handlers into ``{"error": {"code", "message", ...}}``. The code is the
stable contract, the message is for humans.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.message = message or self.title
        self.fields = fields
        super().__init__(self.message)

    def to_reply(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.fields}}


class ValidationFailed(DomainError):
    code = "validation_error"
    status = 422
    title = "Validation error"


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class InsufficientCredits(DomainError):
    code = "insufficient_credits"
    status = 402
    title = "Insufficient credits"

    def __init__(self, *, available: int, requested: int) -> None:
        super().__init__(
            f"{requested} credits needed, {available} available",
            available=available,
            requested=requested,
        )


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503
    title = "Service unavailable"


_BY_CODE: dict[str, type[DomainError]] = {}


def _register(cls: type[DomainError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


def error_from_reply(body: dict[str, Any]) -> DomainError:
    """Rebuild the domain error a request/reply peer answered with."""
    if not _BY_CODE:
        _register(DomainError)
    err = body.get("error") or {}
    code = str(err.get("code", "internal_error"))
    cls = _BY_CODE.get(code, DomainError)
    fields = {k: v for k, v in err.items() if k not in ("code", "message")}
    exc = DomainError.__new__(cls)
    DomainError.__init__(exc, err.get("message"), **fields)
    if cls is DomainError and code != DomainError.code:
        # An error code this build does not know: keep it rather than hide it.
        exc.code = code  # type: ignore[misc]
    return exc
