"""What every remote provider shares: one HTTP call with a per-call timeout, bounded retries
with exponential backoff and jitter (honouring ``Retry-After``), the overall deadline of the
job, error mapping to our codes, output download and finishing.

A provider subclass builds its API's requests and parses its responses; ``error_for`` turns
its error bodies into ``GenerationError``s.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from genimage_common.catalog import ModelSpec

from .. import imaging
from ..errors import (
    ContentRefused,
    DeadlineExceeded,
    GenerationError,
    InvalidInput,
    ProviderAuth,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from ..metrics import PROVIDER_REQUESTS
from .base import RenderedOutput, RenderRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

# Monotonic time by which the current job must be done (set by the chain for each job).
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("generation_deadline", default=math.inf)
# Largest response we read (an image or a JSON document with base64 images).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Retry-After beyond this is not worth waiting for within one job.
MAX_RETRY_AFTER_S = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 20.0


def remaining() -> float:
    return DEADLINE.get() - time.monotonic()


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (OpenAI), then ``Retry-After`` in seconds or as an HTTP date."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def outcome_of(exc: BaseException) -> str:
    return {
        ProviderRateLimited: "rate_limited",
        ProviderUnavailable: "server_error",
        ProviderTimeout: "timeout",
        ContentRefused: "refused",
        InvalidInput: "rejected",
        ProviderAuth: "auth",
        ProviderBadResponse: "malformed",
    }.get(type(exc), "error")


def nearest_ratio(width: int, height: int, choices: list[str]) -> str:
    """The aspect ratio among ``choices`` ("16:9" ...) closest to width:height."""

    def distance(choice: str) -> float:
        a, b = choice.split(":")
        return abs(math.log(int(a) / int(b)) - math.log(width / height))

    return min(choices, key=distance)


def decode_b64(data: Any, what: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise ProviderBadResponse(f"{what}: no base64 data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderBadResponse(f"{what}: invalid base64") from exc


def json_body(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderBadResponse(f"{what}: response is not JSON") from exc


def error_body(response: httpx.Response, key: str | None = None) -> dict[str, Any]:
    """The JSON object of an error response (or its ``key`` member), ``{}`` when there is none:
    error bodies of upstream APIs are not to be trusted to be JSON, or objects."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if key is not None:
        body = body.get(key) if isinstance(body, dict) else None
    return body if isinstance(body, dict) else {}


class HttpProvider:
    """Base of the remote providers. One instance per catalog model."""

    name: ClassVar[str] = "http"
    default_base_url: ClassVar[str] = ""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api_key: str | None,
        policy: RetryPolicy,
        client: httpx.AsyncClient | None = None,
        max_input_pixels: int = 40_000_000,
    ) -> None:
        self.spec = spec
        self.model = spec.name
        self.upstream_model = spec.model or spec.name
        self.base_url = (spec.base_url or self.default_base_url).rstrip("/")
        self.options: dict[str, Any] = dict(spec.options)
        self.api_key = api_key
        self.policy = policy
        self.max_input_pixels = max_input_pixels
        self._client = client or httpx.AsyncClient(follow_redirects=True, headers={"user-agent": "genimage/1.0"})

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- to be provided by each API -----------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key()}"}

    def error_for(self, response: httpx.Response) -> GenerationError:
        """Map an error response of this API (override to read its error body)."""
        return self.status_error(response.status_code, f"HTTP {response.status_code}", response.headers)

    # --- shared machinery ---------------------------------------------------------------------

    def key(self) -> str:
        if not self.api_key:
            raise ProviderAuth(f"no API key for model {self.model!r} (set {self.spec.api_key_env or 'api_key_env'})")
        return self.api_key

    @staticmethod
    def status_error(status: int, message: str, headers: httpx.Headers | None = None) -> GenerationError:
        retry_after = parse_retry_after(headers) if headers is not None else None
        if status == 429:
            return ProviderRateLimited(message, retry_after=retry_after)
        if status in (401, 403):
            return ProviderAuth(message)
        if status in (408, 504):
            return ProviderTimeout(message, retry_after=retry_after)
        if status >= 500:
            return ProviderUnavailable(message, retry_after=retry_after)
        if status in (402, 404):
            # Out of provider credit, or a model the account cannot reach: configuration.
            return ProviderAuth(message)
        return InvalidInput(message)

    def call_timeout(self) -> float:
        left = remaining()
        if left <= 0:
            raise DeadlineExceeded(f"{self.model}: out of time")
        return min(self.spec.timeout_s, left)

    async def send(self, method: str, url: str, *, op: str, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange, no retry: a 2xx response or a ``GenerationError``."""
        timeout = self.call_timeout()
        headers = {**(self.auth_headers() if auth else {}), **kwargs.pop("headers", {})}
        try:
            request = self._client.build_request(method, url, headers=headers, timeout=timeout, **kwargs)
            response = await self._client.send(request, stream=True)
            try:
                body = await self._read(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            self._count("timeout")
            raise ProviderTimeout(f"{self.model}: {op} timed out after {timeout:.1f}s") from exc
        except httpx.TransportError as exc:
            self._count("connection_error")
            raise ProviderUnavailable(f"{self.model}: {op} failed: {type(exc).__name__}") from exc
        response = httpx.Response(response.status_code, headers=response.headers, content=body, request=request)
        if response.is_success:
            self._count("ok")
            return response
        error = self.error_for(response)
        self._count(outcome_of(error))
        log.warning(
            "provider call failed",
            extra={
                "provider": self.name,
                "model": self.model,
                "op": op,
                "status": response.status_code,
                "code": error.code,
            },
        )
        raise error

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise ProviderBadResponse(f"{self.model}: response of {declared} bytes is too large")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ProviderBadResponse(f"{self.model}: response is too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def request(self, method: str, url: str, *, op: str, **kwargs: Any) -> httpx.Response:
        """``send`` with retries on retryable failures, within the job's deadline."""
        return await self.retrying(lambda: self.send(method, url, op=op, **dict(kwargs)), op=op)

    async def retrying(self, call: Callable[[], Awaitable[T]], *, op: str) -> T:
        policy = self.policy

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = getattr(exc, "retry_after", None)
            if asked is not None:
                return min(asked, MAX_RETRY_AFTER_S)
            # Exponential backoff with "equal jitter": half fixed, half random.
            ceiling = min(policy.max_s, policy.base_s * 2 ** (state.attempt_number - 1))
            return ceiling / 2 + random.uniform(0, ceiling / 2)

        def stop(state: RetryCallState) -> bool:
            # Give up when attempts are spent or the wait would overrun the job's deadline.
            return state.attempt_number >= policy.attempts or state.upcoming_sleep >= remaining() - 0.05

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "retrying provider call",
                extra={
                    "provider": self.name,
                    "model": self.model,
                    "op": op,
                    "attempt": state.attempt_number,
                    "wait_s": round(state.upcoming_sleep, 3),
                    "error": getattr(exc, "code", repr(exc)),
                },
            )

        retryer = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, GenerationError) and e.retryable),
            before_sleep=before_sleep,
            reraise=True,
        )

        async def attempt() -> T:
            return await call()

        return await retryer(attempt)

    def _count(self, outcome: str) -> None:
        PROVIDER_REQUESTS.labels(provider=self.name, outcome=outcome).inc()

    async def fetch_output(self, url: str) -> bytes:
        """An output file the API pointed to (a URL or a ``data:`` URI)."""
        if url.startswith("data:"):
            _, _, payload = url.partition(",")
            return decode_b64(payload, "output data URI")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ProviderBadResponse(f"{self.model}: output URL with scheme {parts.scheme!r}")
        # Credentials only go back to the API's own host, never to a CDN.
        same_host = parts.netloc == urlsplit(self.base_url).netloc
        response = await self.request("GET", url, op="download", auth=same_host)
        return response.content

    def finish(self, request: RenderRequest, index: int, data: bytes) -> RenderedOutput:
        """Whatever the provider returned becomes the output the user asked for: decoded (or
        rejected as malformed), fitted to the requested size, watermarked, re-encoded in the
        requested format with the generation parameters embedded."""
        try:
            img = imaging.decode(data, max_pixels=self.max_input_pixels)
        except imaging.UndecodableImage as exc:
            raise ProviderBadResponse(f"{self.model}: output {index}: {exc}") from exc
        img = imaging.cover(img.convert("RGB"), request.width, request.height)
        if request.watermark:
            img = imaging.watermark(img)
        parameters = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "index": index,
            "model": self.model,
            "provider": self.name,
            "width": request.width,
            "height": request.height,
        }
        return RenderedOutput(
            imaging.encode(img, request.output_format, parameters),
            imaging.CONTENT_TYPES[request.output_format],
            request.width,
            request.height,
        )

    def require_images(self, request: RenderRequest) -> None:
        if request.kind != "image":
            raise InvalidInput(f"model {self.model!r} makes images only")
