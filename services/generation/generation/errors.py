"""Why a generation did not succeed, as the stable codes ``generation.failed`` carries.

Each error says whether repeating the *same call* may help (``retryable``: rate limits, 5xx,
timeouts, dropped connections) and whether *another model* may help (``fallback``: the
provider is down or misconfigured; never for content refusals, where trying elsewhere would
route around a safety system). ``generation.failed.error.retryable`` is the first flag: a
client may resubmit the request later.
"""

from __future__ import annotations

from typing import ClassVar


class GenerationError(Exception):
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False
    fallback: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Seconds the provider asked us to wait (Retry-After and equivalents).
        self.retry_after = retry_after


class InvalidInput(GenerationError):
    """The request cannot be served as asked (unknown model, missing input image, a parameter
    the provider rejects). A provider's 400 may be specific to it, so fallbacks still apply."""

    code = "invalid_input"
    fallback = True


class JobInvalid(InvalidInput):
    """Invalid before any provider is involved: no model of the chain could help."""

    fallback = False


class ContentRefused(GenerationError):
    code = "content_refused"


class ProviderTimeout(GenerationError):
    code = "provider_timeout"
    retryable = True
    fallback = True


class ProviderUnavailable(GenerationError):
    """5xx answers and connection errors."""

    code = "provider_unavailable"
    retryable = True
    fallback = True


class ProviderRateLimited(GenerationError):
    code = "provider_rate_limited"
    retryable = True
    fallback = True


class ProviderAuth(GenerationError):
    """A missing or rejected API key: an operator problem, not worth repeating."""

    code = "provider_auth"
    fallback = True


class ProviderBadResponse(GenerationError):
    """A response that does not follow the provider's documented format."""

    code = "provider_error"
    fallback = True


class DeadlineExceeded(GenerationError):
    """The job ran out of time before the billing hold expires."""

    code = "deadline_exceeded"
    retryable = True


class JobCanceled(Exception):
    """The user canceled the generation while it ran (not a failure)."""
