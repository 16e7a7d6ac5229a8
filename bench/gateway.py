"""What the gateway's guard rails cost per request: authentication (JWT, API key), the shared
rate limiter (GCRA in NATS KV) and the idempotency record, against an exempt probe as the
baseline; plus upload re-encoding. One gateway process on its own infrastructure.

    .venv/bin/python bench/gateway.py
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
import uuid
from pathlib import Path

import httpx
import nats
from PIL import Image

# Run as a script, this file's folder comes first on sys.path and this file's name would
# shadow the gateway service's package: put the repository root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if p and Path(p).resolve() != ROOT / "bench")]

from bench.harness import infrastructure, summary_ms, write_results  # noqa: E402
from gateway.ratelimit import Policy, RateLimiter  # noqa: E402
from genimage_devstack.processes import free_port  # noqa: E402
from genimage_devstack.stack import ServiceProcess  # noqa: E402

N = 300


def timed(call, n: int = N) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


async def limiter_hits(nats_url: str, n: int) -> list[float]:
    nc = await nats.connect(nats_url)
    try:
        limiter = await RateLimiter.open(nc.jetstream(), "gateway_ratelimits")
        policy = Policy("bench", 1_000_000, 60)
        principal = uuid.uuid4().hex
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            await limiter.hit(policy, principal)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        await nc.close()


def main() -> None:
    with infrastructure() as (endpoints, env):
        gateway = ServiceProcess("gateway", free_port(), {**env, "LOG_LEVEL": "WARNING"})
        gateway.start()
        try:
            gateway.wait_ready()
            with httpx.Client(base_url=gateway.url, timeout=30) as api:
                email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
                signup = timed(
                    lambda: api.post(
                        "/v1/auth/signup",
                        json={"email": f"{uuid.uuid4().hex[:10]}@example.com", "password": "correct horse battery"},
                    ),
                    n=20,
                )
                body = api.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery"}).json()
                jwt_auth = {"Authorization": f"Bearer {body['access_token']}"}
                key = api.post("/v1/api-keys", headers=jwt_auth, json={"name": "bench"}).json()["key"]
                key_auth = {"Authorization": f"Bearer {key}"}
                for _ in range(20):  # warm up connections and caches
                    api.get("/v1/api-keys", headers=jwt_auth)
                probe = timed(lambda: api.get("/healthz"))
                with_jwt = timed(lambda: api.get("/v1/api-keys", headers=jwt_auth))
                with_key = timed(lambda: api.get("/v1/api-keys", headers=key_auth))
                anonymous_404 = timed(lambda: api.get("/v1/nothing-here"))
                photo = io.BytesIO()
                Image.effect_noise((1280, 960), 64).convert("RGB").save(photo, format="JPEG", quality=90)
                upload = timed(
                    lambda: api.post(
                        "/v1/uploads", headers=jwt_auth, files={"file": ("p.jpg", photo.getvalue(), "image/jpeg")}
                    ),
                    n=20,
                )
            kv = asyncio.run(limiter_hits(endpoints.nats_url, N))
        finally:
            gateway.stop()
    write_results(
        "gateway",
        {
            "exempt_probe_healthz": summary_ms(probe),
            "get_api_keys_with_jwt": summary_ms(with_jwt),
            "get_api_keys_with_api_key": summary_ms(with_key),
            "anonymous_404": summary_ms(anonymous_404),
            "rate_limiter_hit_nats_kv": summary_ms(kv),
            "signup_argon2id": summary_ms(signup),
            "upload_1280x960_jpeg_to_png": summary_ms(upload),
            "notes": "one gateway process, loopback, sequential requests; the JWT and API-key rows include "
            "authentication, one GCRA hit (two for API keys) and one SQL query",
        },
    )


if __name__ == "__main__":
    main()
