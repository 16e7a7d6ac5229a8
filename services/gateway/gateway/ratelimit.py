"""Request rates and in-flight generations, shared by every gateway replica through NATS KV.

Rates use GCRA (the generic cell rate algorithm): one key per (policy, principal) holds the
"theoretical arrival time"; a request is allowed while that time stays within one window of
now. It behaves like a token bucket of ``limit`` tokens refilled over ``window`` — bursts up
to the limit, no double burst at window boundaries — and gives exact ``remaining`` and
``reset`` figures for the RateLimit headers. Updates are compare-and-set on the key's
revision, so concurrent replicas never lose a hit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from genimage_common.errors import ServiceUnavailable

log = logging.getLogger(__name__)

RATE_LIMITED = Counter("genimage_rate_limited_total", "Requests refused with 429", ["policy"])
CAS_ATTEMPTS = 16


@dataclass(frozen=True)
class Policy:
    name: str  # shown in the RateLimit headers
    limit: int
    window_s: int


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    remaining: int
    reset_s: int  # until the quota is whole again
    retry_after_s: int  # until the next request is allowed (0 when allowed)


def gcra(tat_ms: int | None, now_ms: int, policy: Policy) -> tuple[Decision, int | None]:
    """One request against a stored arrival time; returns the decision and the new time to
    store (None when refused: a refused request does not consume quota)."""
    interval = policy.window_s * 1000 / policy.limit
    tat = max(tat_ms or now_ms, now_ms)
    new_tat = tat + interval
    horizon = new_tat - now_ms  # how far ahead of now the quota is spent
    if horizon > policy.window_s * 1000 + 1e-6:
        retry = horizon - policy.window_s * 1000
        return Decision(policy, False, 0, math.ceil((tat - now_ms) / 1000), max(1, math.ceil(retry / 1000))), None
    remaining = int((policy.window_s * 1000 - horizon) // interval)
    return Decision(policy, True, remaining, math.ceil(horizon / 1000), 0), round(new_tat)


async def _kv(js: JetStreamContext, bucket: str, *, ttl_s: float, replicas: int) -> KeyValue:
    """The bucket, created with ``replicas`` (the streams' ``STREAM_REPLICAS``): state that
    decides whether a request is admitted must survive the loss of a NATS node like the events
    do. An existing bucket with another replica count is brought to it (JetStream moves the
    data; an R1 bucket of an earlier release becomes R3 in place)."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas)
        try:
            return await js.create_key_value(config)
        except BadRequestError:  # another replica created it in between
            kv = await js.key_value(bucket)
    stream = f"KV_{bucket}"
    current = (await js.stream_info(stream)).config
    if current.num_replicas != replicas:
        await js.update_stream(replace(current, num_replicas=replicas))
        log.info("kv bucket replicas changed", extra={"bucket": bucket, "replicas": replicas})
    return kv


def unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("generation limits are unavailable (NATS KV); retry shortly", retry_after=5)


# What a KV operation raises when NATS, the bucket or its stream leader cannot be reached.
KV_DOWN = (nats.errors.Error, TimeoutError, OSError)


class RateLimiter:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, *, replicas: int = 1) -> RateLimiter:
        # Keys outlive the longest window (1 day) and then vanish with the bucket's max age.
        return cls(await _kv(js, bucket, ttl_s=2 * 86400, replicas=replicas))

    async def hit(self, policy: Policy, principal: str, *, now_ms: int | None = None) -> Decision:
        # The parameters are part of the key: replicas mid-rollout with other limits keep
        # separate state instead of reading each other's arrival times with the wrong rate.
        key = f"{policy.name}.{policy.limit}.{policy.window_s}.{principal}"
        for _ in range(CAS_ATTEMPTS * 2):
            now = now_ms if now_ms is not None else int(time.time() * 1000)
            try:
                entry = await self._kv.get(key)
                tat, revision = int(entry.value or b"0"), entry.revision
            except KeyNotFoundError:
                tat, revision = None, None
            decision, new_tat = gcra(tat, now, policy)
            if new_tat is None:
                RATE_LIMITED.labels(policy.name).inc()
                return decision
            try:
                if revision is None:
                    await self._kv.create(key, str(new_tat).encode())
                else:
                    await self._kv.update(key, str(new_tat).encode(), last=revision)
                return decision
            except KeyWrongLastSequenceError:
                # Another request hit the same key in between: read again, after a short jitter.
                await asyncio.sleep(random.uniform(0, 0.002))
        log.warning("rate limit key too contended; allowing", extra={"policy": policy.name})
        return Decision(policy, True, 0, policy.window_s, 0)


class InflightSlots:
    """Generations accepted and not finished, per user: ``{generation_id: expires_at}`` in one
    key per user. A slot is added once credits are reserved (before the request is published,
    so its terminal event cannot come first) and given back on the terminal event; a slot whose
    terminal event never comes expires.

    The limit is checked before reserving, against accepted generations: requests that end in
    ``402`` never hold a slot. Several creations of one user racing each other can pass the
    check together, so a burst may exceed the limit by its own size (bounded by the request
    rate limit)."""

    def __init__(self, kv: KeyValue, *, ttl_s: float) -> None:
        self._kv = kv
        self._ttl = ttl_s

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, *, ttl_s: float, replicas: int = 1) -> InflightSlots:
        return cls(await _kv(js, bucket, ttl_s=2 * 86400, replicas=replicas), ttl_s=ttl_s)

    async def _read(self, user_id: str) -> tuple[dict[str, float], int | None]:
        try:
            entry = await self._kv.get(f"u.{user_id}")
        except KeyNotFoundError:
            return {}, None
        except KV_DOWN as exc:
            raise unavailable() from exc
        now = time.time()
        slots = {gid: exp for gid, exp in json.loads(entry.value or b"{}").items() if exp > now}
        return slots, entry.revision

    async def _change(self, user_id: str, change: Callable[[dict[str, float]], dict[str, float] | None]) -> bool:
        for attempt in range(CAS_ATTEMPTS * 4):
            slots, revision = await self._read(user_id)
            new = change(slots)
            if new is None:
                return True
            payload = json.dumps(new).encode()
            try:
                if revision is None:
                    await self._kv.create(f"u.{user_id}", payload)
                else:
                    await self._kv.update(f"u.{user_id}", payload, last=revision)
                return True
            except KeyWrongLastSequenceError:
                # Concurrent writers of the same user: back off a little, with jitter.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
            except KV_DOWN as exc:
                raise unavailable() from exc
        return False

    async def count(self, user_id: str) -> int:
        return len((await self._read(user_id))[0])

    async def admits(self, user_id: str, generation_id: str, *, limit: int) -> bool:
        """Whether one more generation may start (a retry of one already counted may)."""
        slots, _ = await self._read(user_id)
        return generation_id in slots or len(slots) < limit

    async def holds(self, user_id: str, generation_id: str) -> bool:
        return generation_id in (await self._read(user_id))[0]

    async def add(self, user_id: str, generation_id: str) -> None:
        expires = time.time() + self._ttl
        if not await self._change(
            user_id, lambda slots: None if generation_id in slots else {**slots, generation_id: expires}
        ):
            log.warning("in-flight slot not recorded (contention)", extra={"user_id": user_id})

    async def release(self, user_id: str, generation_id: str) -> None:
        if not await self._change(
            user_id,
            lambda slots: {g: e for g, e in slots.items() if g != generation_id} if generation_id in slots else None,
        ):
            raise RuntimeError("in-flight slot release contended; will be retried")
