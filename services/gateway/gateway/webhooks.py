"""Webhooks of a generation: the subscription given with the request, one delivery per
matching event, signed per Standard Webhooks and retried with exponential backoff.

Deliveries are rows of ``identity.webhook_deliveries``; any replica sends those that are due
(leased with ``FOR UPDATE SKIP LOCKED``), so a crash mid-send only delays a delivery. Each
replica keeps up to ``webhook_concurrency`` deliveries in flight, each on its own and each
within a total deadline, so one slow receiver holds one slot for at most that long and never
the deliveries of anybody else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook

from genimage_common.contracts.status import TERMINAL_EVENTS
from genimage_common.database import SessionMaker
from genimage_common.events import Event
from genimage_common.ids import derived_id

from . import repository as repo
from . import ssrf
from .presenters import Links, event_data
from .settings import GatewaySettings

log = logging.getLogger(__name__)

DELIVERIES = Counter("genimage_webhook_deliveries_total", "Webhook delivery attempts", ["outcome"])

# The request's `webhook_events` filter, by event type.
FILTER_OF = {
    "generation.started": "started",
    "generation.progress": "progress",
    **{name: "completed" for name in TERMINAL_EVENTS},
}
ALL_FILTERS = ["started", "progress", "completed"]
USER_AGENT = "genimage-webhooks/1.0"


def signing_secret(settings: GatewaySettings, user_id: uuid.UUID) -> str:
    """Each user's Standard Webhooks secret (``whsec_<base64>``), derived from the server key:
    nothing to store, and one user's secret says nothing about another's."""
    raw = hmac.new(settings.webhook_signing_key.encode(), f"webhook-secret:{user_id}".encode(), hashlib.sha256)
    return "whsec_" + base64.b64encode(raw.digest()).decode()


def retry_delay(settings: GatewaySettings, attempts: int) -> float:
    """Seconds before the next attempt, after ``attempts`` failed ones."""
    delay = settings.webhook_retry_base_s * settings.webhook_retry_factor ** max(attempts - 1, 0)
    delay = min(delay, settings.webhook_retry_max_s)
    return delay * random.uniform(0.9, 1.1)


async def enqueue(session: AsyncSession, event: Event[Any], *, links: Links) -> bool:
    """Record the delivery of ``event`` if its generation asked for it (idempotent)."""
    generation_id = event.data.generation_id
    sub = await repo.webhook_subscription(session, generation_id)
    if sub is None or sub.user_id != event.data.user_id:
        return False
    if FILTER_OF.get(event.data.name) not in sub.events:
        return False
    payload = {
        "type": event.data.name,
        "timestamp": event.model_dump(mode="json")["time"],
        "data": {"generation_id": str(generation_id), **event_data(event, links)},
    }
    return await repo.insert_webhook_delivery(
        session,
        delivery_id=derived_id("webhook-delivery", event.id, generation_id),
        generation_id=generation_id,
        user_id=event.data.user_id,
        url=sub.url,
        event_type=event.data.name,
        payload=payload,
    )


class WebhookSender:
    def __init__(self, settings: GatewaySettings, sessions: SessionMaker) -> None:
        self._settings = settings
        self._sessions = sessions
        self._allowed = ssrf.parse_networks(settings.webhook_allowed_networks)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # No redirects (a 30x to an internal address is the oldest SSRF trick), no proxies
        # from the environment, no connection reuse across hosts needed. These timeouts bound
        # each connect and read; the deadline in `_deliver` bounds the whole attempt (a
        # receiver trickling a byte at a time never trips a read timeout).
        self._http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        # A delivery cut short here keeps its lease and its counted attempt: retried later.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            # Cleared before looking, so that a wake-up during the lease is not lost.
            self._wake.clear()
            try:
                await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                # PostgreSQL away: the rows stay due and are picked up next round.
                log.exception("webhook round failed")
            # Woken by a new delivery or by a slot coming free; else look again after a while.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.webhook_poll_interval_s)

    async def send_due(self) -> int:
        """Start the due deliveries that fit in the free slots; returns how many started."""
        free = self._settings.webhook_concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        # Longer than any attempt can last (the deadline), so a live sender never loses its lease.
        lease = self._settings.webhook_timeout_s + 30
        async with self._sessions.begin() as session:
            rows = await repo.lease_due_deliveries(session, limit=free, lease_s=lease)
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=f"webhook-{row.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Recording the outcome failed (PostgreSQL away): the lease runs out and the
            # delivery is tried again, its attempt already counted.
            log.error("webhook delivery failed to complete", exc_info=task.exception())
        self._wake.set()

    async def _deliver(self, row: Any) -> None:
        status_code: int | None = None
        error: str | None = None
        permanent = False
        attempts = row.attempts  # this one included: counted when it was leased
        deadline = self._settings.webhook_timeout_s
        recount: int | None = None
        if attempts > self._settings.webhook_max_attempts:
            # The last attempt started and never ended (its replica died): it was the last.
            error, permanent = "the last attempt did not finish", True
            attempts = recount = self._settings.webhook_max_attempts
        else:
            try:
                async with asyncio.timeout(deadline):
                    status_code = await self._send(row)
            except ssrf.TargetRefused as exc:
                error, permanent = str(exc), True
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
            except TimeoutError:
                error = f"no complete answer within the {deadline:g} s deadline"
        if status_code is not None and 200 <= status_code < 300:
            outcome, retry_in = "delivered", None
        elif permanent or attempts >= self._settings.webhook_max_attempts:
            outcome, retry_in = "failed", None
        else:
            outcome, retry_in = "pending", retry_delay(self._settings, attempts)
        if status_code is not None and error is None and outcome != "delivered":
            error = f"HTTP {status_code}"
        DELIVERIES.labels("retry" if outcome == "pending" else outcome).inc()
        async with self._sessions.begin() as session:
            await repo.record_delivery_attempt(
                session,
                delivery_id=row.id,
                status=outcome,
                status_code=status_code,
                error=error,
                retry_in_s=retry_in,
                attempts=recount,
            )
        log.info(
            "webhook attempt",
            extra={
                "generation_id": str(row.generation_id),
                "user_id": str(row.user_id),
                "delivery_id": str(row.id),
                "attempt": attempts,
                "outcome": outcome,
                "status_code": status_code,
            },
        )

    async def _send(self, row: Any) -> int:
        target = await ssrf.resolve(row.url, self._allowed, public=self._settings.webhook_public_targets)
        body = json.dumps(row.payload, separators=(",", ":"))
        msg_id = str(row.id)
        now = datetime.now(UTC)
        signature = Webhook(signing_secret(self._settings, row.user_id)).sign(msg_id=msg_id, timestamp=now, data=body)
        # Connect to the address just checked (no second DNS lookup that could answer
        # differently), while Host and TLS SNI keep naming the original host.
        url = httpx.URL(row.url)
        pinned = url.copy_with(host=target.address)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": url.netloc.decode("ascii"),
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        # Streamed and never read: the receiver's answer body is of no interest, whatever its size.
        async with self._http.stream(
            "POST", pinned, content=body.encode(), headers=headers, extensions=extensions
        ) as response:
            return response.status_code
