"""NATS conventions in one place: the broker, event publishing, request/reply, dead letters."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.nats import NatsBroker, PubAck
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus.provider import (
    BatchNatsMetricsSettingsProvider,
    NatsMetricsSettingsProvider,
)
from faststream.prometheus import PrometheusMiddleware
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import ValidationError

from .errors import DomainError, ServiceUnavailable, ValidationFailed, error_from_reply
from .events import Event
from .streams import DLQ
from .subjects import dead_letter
from .telemetry import trace_headers

log = logging.getLogger(__name__)

# Bounded redelivery: after this many deliveries a message is dead-lettered and terminated.
MAX_DELIVER = 5
# Delay before redelivery after a failure, by delivery number (seconds).
BACKOFF = (0.5, 2.0, 5.0, 15.0, 30.0)

DEAD_LETTERS = Counter("genimage_dead_letters_total", "Messages moved to the DLQ stream", ["stream", "consumer"])


def metric_subject(subject: str) -> str:
    """A subject as a metric label: user ids and reply inboxes collapse to ``*``, so every user
    does not add a series (``generation.completed.<user_id>`` → ``generation.completed.*``)."""
    if subject.startswith("_INBOX."):
        return "_INBOX.*"
    return ".".join("*" if _is_id(token) else token for token in subject.split("."))


def _is_id(token: str) -> bool:
    return len(token) == 36 and token.count("-") == 4


class _Subjects(NatsMetricsSettingsProvider):
    def get_consume_attrs_from_message(self, msg: Any) -> Any:
        attrs = super().get_consume_attrs_from_message(msg)
        return {**attrs, "destination_name": metric_subject(attrs["destination_name"])}

    def get_publish_destination_name_from_cmd(self, cmd: Any) -> str:
        return metric_subject(super().get_publish_destination_name_from_cmd(cmd))


class _BatchSubjects(BatchNatsMetricsSettingsProvider):
    def get_consume_attrs_from_message(self, msg: Any) -> Any:
        attrs = super().get_consume_attrs_from_message(msg)
        return {**attrs, "destination_name": metric_subject(attrs["destination_name"])}

    def get_publish_destination_name_from_cmd(self, cmd: Any) -> str:
        return metric_subject(super().get_publish_destination_name_from_cmd(cmd))


def _metrics_settings(msg: Any) -> Any:
    """FastStream's NATS metrics, with bounded subject labels."""
    if isinstance(msg, list | tuple):
        return _BatchSubjects()
    return _Subjects() if msg is None or hasattr(msg, "subject") else None


def make_broker(servers: str, *, service: str, registry: CollectorRegistry = REGISTRY) -> NatsBroker:
    return NatsBroker(
        servers,
        middlewares=[
            NatsTelemetryMiddleware(),
            PrometheusMiddleware(settings_provider_factory=_metrics_settings, registry=registry, app_name=service),
            ErrorPolicyMiddleware,
        ],
        # Reconnect forever: a worker survives a NATS restart instead of exiting.
        max_reconnect_attempts=-1,
        # Through the root logger, so FastStream's lines are JSON like ours.
        logger=logging.getLogger("genimage.faststream"),
    )


JSON = {"content-type": "application/json"}


def event_headers(event: Event[Any]) -> dict[str, str]:
    return {"Nats-Msg-Id": str(event.id), **JSON, **trace_headers()}


async def publish_event(broker: NatsBroker, event: Event[Any], *, stream: str) -> PubAck:
    """Publish to JetStream and wait for the ack; a repeat of the same event id is deduplicated."""
    return await broker.publish(
        event.model_dump_json().encode(), event.nats_subject, headers=event_headers(event), stream=stream
    )


async def rpc_call(broker: NatsBroker, subject: str, payload: dict[str, Any], *, timeout: float = 5.0) -> Any:
    """Request/reply with the error convention: ``{"error": {...}}`` comes back as a DomainError."""
    try:
        reply = await broker.request(json.dumps(payload, default=str).encode(), subject, headers=JSON, timeout=timeout)
    except TimeoutError as exc:
        raise ServiceUnavailable(f"{subject} did not answer in time") from exc
    except Exception as exc:  # no responders, connection lost
        if type(exc).__name__ in ("NoRespondersError", "ConnectionClosedError", "TimeoutError"):
            raise ServiceUnavailable(f"{subject} is unavailable") from exc
        raise
    body = json.loads(reply.body) if reply.body else None
    # An error reply is exactly {"error": {...}}; a resource may well have an "error" field.
    if isinstance(body, dict) and body.keys() == {"error"} and isinstance(body["error"], dict):
        raise error_from_reply(body)
    return body


class ErrorPolicyMiddleware(BaseMiddleware):
    """What a failure means, for every subscriber of a service.

    - Request/reply: a domain or validation error becomes the ``{"error": {...}}`` reply.
    - JetStream: bounded redelivery with backoff; the last failure goes to
      ``dlq.<stream>.<consumer>`` and the message is terminated. A message that can never be
      decoded is dead-lettered at once: retrying cannot fix it.
    """

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        reply = getattr(raw, "reply", "") or ""
        if not reply.startswith("$JS.ACK."):
            return await self._request(call_next, msg)
        meta = raw.metadata
        try:
            return await call_next(msg)
        except (NackMessage, RejectMessage):
            raise
        except Exception as exc:
            poison = isinstance(exc, ValidationError | json.JSONDecodeError)
            delivered = meta.num_delivered
            if poison or delivered >= MAX_DELIVER:
                await self._dead_letter(msg, meta, exc, delivered)
                raise RejectMessage() from exc
            log.warning(
                "message handling failed, will be redelivered",
                extra={"subject": raw.subject, "delivered": delivered, "error": repr(exc)},
            )
            raise NackMessage(delay=BACKOFF[min(delivered, len(BACKOFF)) - 1]) from exc

    async def _request(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except DomainError as exc:
            return exc.to_reply()
        except ValidationError as exc:
            details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
            return ValidationFailed("invalid request", errors=details[:10]).to_reply()

    async def _dead_letter(self, msg: StreamMessage[Any], meta: Any, exc: Exception, delivered: int) -> None:
        broker = self.context.get("broker")
        await dead_letter_message(broker.connection.jetstream(), msg.raw_message, exc, delivered=delivered)


async def dead_letter_message(js: JetStreamContext, msg: Msg, exc: BaseException, *, delivered: int) -> None:
    """Copy a JetStream message to ``dlq.<stream>.<consumer>`` with why and how often it failed.

    The caller then terminates the original. Deduplicated per stream sequence, so a crash
    between the copy and the termination does not dead-letter it twice.
    """
    meta = msg.metadata
    stream, consumer = meta.stream, meta.consumer
    headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
    headers.update(
        {
            "Genimage-Dlq-Subject": msg.subject,
            "Genimage-Dlq-Stream-Seq": str(meta.sequence.stream),
            "Genimage-Dlq-Deliveries": str(delivered),
            "Genimage-Dlq-Error": repr(exc)[:500],
            "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{meta.sequence.stream}",
        }
    )
    await js.publish(dead_letter(stream, consumer), msg.data, headers=headers, stream=DLQ)
    DEAD_LETTERS.labels(stream=stream, consumer=consumer).inc()
    log.error(
        "message dead-lettered",
        extra={"subject": msg.subject, "stream": stream, "consumer": consumer, "error": repr(exc)[:300]},
    )
