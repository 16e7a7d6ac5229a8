"""Errors only the public API raises (the shared ones are in ``genimage_common.errors``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from genimage_common.contracts.rpc import invalid_request
from genimage_common.errors import DomainError


class BadRequest(DomainError):
    code = "bad_request"
    status = 400
    title = "Bad request"


class RateLimited(DomainError):
    """``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after: int, policy: str) -> None:
        super().__init__(message, policy=policy, retry_after=retry_after)
        self.retry_after = retry_after


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused"


class IdempotencyKeyInUse(DomainError):
    code = "idempotency_key_in_use"
    status = 409
    title = "Idempotency key in use"


@contextmanager
def checked_request() -> Iterator[None]:
    """Build a request to another service from what a client sent: a value the route's own
    checks let through but the service's contract refuses (a ledger cursor that is not a
    number) is the client's mistake, answered as the service would have: ``validation_error``."""
    try:
        yield
    except ValidationError as exc:
        raise invalid_request(exc) from exc
