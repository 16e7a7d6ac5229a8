"""Tokens of an external OpenID Connect issuer (Clerk, Auth0, Google, Keycloak...), verified
with the issuer's published keys (JWKS), cached and refreshed when an unknown key id shows up."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt

from genimage_common.errors import ServiceUnavailable, Unauthorized

from .settings import GatewaySettings

log = logging.getLogger(__name__)

# Asymmetric algorithms only: an HMAC "signature" keyed with a public key is the classic
# algorithm-confusion attack.
ALLOWED = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
# An unknown `kid` refetches the JWKS at most this often (a flood of made-up kids must not
# turn into a flood of requests to the issuer).
REFETCH_MIN_S = 30.0


class OidcVerifier:
    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._configured_issuer = settings.oidc_issuer
        self._jwks_url = settings.oidc_jwks_url
        self._audience = settings.oidc_audience or None
        self._algorithms = [a for a in settings.oidc_algorithms if a in ALLOWED]
        self._ttl = settings.oidc_jwks_ttl_s
        self._http = http
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    def accepts(self, issuer: str | None) -> bool:
        return bool(self.issuer) and issuer is not None and issuer.rstrip("/") == self.issuer

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid access token") from exc
        if header.get("alg") not in self._algorithms:
            raise Unauthorized("invalid access token")
        key = await self._key(header.get("kid"))
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=self._algorithms,
                issuer=self._configured_issuer,
                audience=self._audience,
                leeway=30,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("access token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid access token") from exc

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        if not self._keys or now - self._fetched_at > self._ttl:
            await self._refresh(stale_before=now)
        if kid not in self._keys and time.monotonic() - self._fetched_at > REFETCH_MIN_S:
            await self._refresh(stale_before=time.monotonic())
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthorized("invalid access token")
        return key

    async def _refresh(self, *, stale_before: float) -> None:
        async with self._lock:
            if self._fetched_at >= stale_before and self._keys:
                return  # another request refreshed meanwhile
            try:
                url = self._jwks_url or await self._discover()
                response = await self._http.get(url)
                response.raise_for_status()
                keys: dict[str | None, jwt.PyJWK] = {}
                for jwk in response.json().get("keys", []):
                    if jwk.get("use", "sig") != "sig":
                        continue
                    try:
                        keys[jwk.get("kid")] = jwt.PyJWK(jwk)
                    except jwt.PyJWTError:
                        continue  # a key type this build cannot use
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch failed", extra={"issuer": self.issuer, "error": repr(exc)})
                if not self._keys:
                    raise ServiceUnavailable("the identity provider's keys are unavailable") from exc
                return  # keep serving with the keys we have
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def _discover(self) -> str:
        response = await self._http.get(f"{self.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        url = response.json().get("jwks_uri")
        if not isinstance(url, str):
            raise ValueError("discovery document without jwks_uri")
        self._jwks_url = url
        return url
