"""The gatekeeper: one ASGI middleware in front of every route that

1. authenticates the bearer credential once (the routes' ``CurrentUser`` reads the result);
2. counts the request against the rate-limit policies of who is asking — the user and the
   API key, or the client address when anonymous — refusing with ``429`` and
   ``Retry-After``; and puts ``RateLimit`` / ``RateLimit-Policy`` headers (IETF
   draft-ietf-httpapi-ratelimit-headers) on every response;
3. refuses bodies over the limit (``413``; by ``Content-Length`` at once, else while reading).

Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) pass untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genimage_common.errors import DomainError, ServiceUnavailable, Unauthorized

from . import identity, security
from .errors import PayloadTooLarge, RateLimited
from .problems import domain_problem
from .ratelimit import Decision, Policy

log = logging.getLogger(__name__)

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
UPLOAD_PATHS = frozenset({"/v1/uploads"})
# Multipart framing around the file.
MULTIPART_OVERHEAD = 64 * 1024
MAX_CREDENTIAL = 4096


def policy_headers(decisions: list[Decision]) -> list[tuple[bytes, bytes]]:
    if not decisions:
        return []
    policies = ", ".join(f'"{d.policy.name}";q={d.policy.limit};w={d.policy.window_s}' for d in decisions)
    limits = ", ".join(f'"{d.policy.name}";r={d.remaining};t={d.reset_s}' for d in decisions)
    return [(b"ratelimit-policy", policies.encode()), (b"ratelimit", limits.encode())]


class Gatekeeper:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        settings = services.settings
        request = Request(scope)

        principal = await self._authenticate(scope, services)
        decisions = await self._count(services, principal, scope)
        extra = policy_headers(decisions)

        limit = settings.max_body_bytes
        if scope["path"] in UPLOAD_PATHS:
            limit = settings.upload_max_bytes + MULTIPART_OVERHEAD
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = domain_problem(PayloadTooLarge(f"request bodies are limited to {limit} bytes"), request)
            response.raw_headers.extend(extra)
            await response(scope, receive, send)
            return

        refused = [d for d in decisions if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.retry_after_s)
            response = domain_problem(
                RateLimited(
                    f"rate limit {worst.policy.name!r} exceeded: {worst.policy.limit} requests "
                    f"per {worst.policy.window_s} s",
                    retry_after=worst.retry_after_s,
                    policy=worst.policy.name,
                ),
                request,
            )
            response.raw_headers.extend(extra)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTP exceptions met while reading the body, so this
                    # reaches the problem+json handler as a 413.
                    raise StarletteHTTPException(413, f"request bodies are limited to {limit} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)

    async def _authenticate(self, scope: Scope, services: Any) -> identity.Principal | None:
        state = scope.setdefault("state", {})
        header = Headers(scope=scope).get("authorization")
        if header is None:
            return None
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL:
            state["auth_error"] = Unauthorized("invalid bearer token")
            return None
        try:
            # Its own unit of work, before the route's: the rate limits need to know who asks.
            # It writes too (an API key's last use, an OIDC subject's first sight, whose
            # user_registered event the commit sends on its way).
            async with services.uow.transaction() as session:
                principal = await identity.authenticate(
                    session, services.settings, credential=credential, oidc=services.oidc
                )
        except DomainError as exc:
            state["auth_error"] = exc
            return None
        except Exception:
            log.exception("authentication failed")
            state["auth_error"] = ServiceUnavailable("authentication is unavailable")
            return None
        state["principal"] = principal
        return principal

    async def _count(self, services: Any, principal: identity.Principal | None, scope: Scope) -> list[Decision]:
        settings = services.settings
        window = settings.rate_limit_window_s
        checks: list[tuple[Policy, str]] = []
        if principal is None:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            checks.append(
                (Policy("anonymous", settings.rate_limit_anonymous, window), security.fingerprint("ip", address)[:32])
            )
        else:
            checks.append((Policy("user", settings.rate_limit_user, window), str(principal.user.id)))
            if principal.api_key_id is not None:
                checks.append((Policy("api_key", settings.rate_limit_api_key, window), str(principal.api_key_id)))
        try:
            return list(await asyncio.gather(*(services.limiter.hit(p, key) for p, key in checks)))
        except Exception:
            # NATS unavailable: serve rather than refuse everyone (the limits are a safeguard).
            log.warning("rate limiter unavailable; request not counted", exc_info=True)
            return []
