"""NATS conventions in one place: the broker, event publishing, request/reply, dead letters."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, NoReturn

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
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
from .redelivery import (
    BACKOFF,
    MAX_DELIVER,
    Failure,
    Probe,
    RedeliveryPolicy,
    TransientCounts,
    classify,
    is_transient,
)
from .settings import CommonSettings
from .streams import DLQ
from .subjects import dead_letter
from .telemetry import trace_headers

log = logging.getLogger(__name__)

__all__ = ["BACKOFF", "MAX_DELIVER", "ErrorPolicyMiddleware", "make_broker", "publish_event", "rpc_call"]

DEAD_LETTERS = Counter("genimage_dead_letters_total", "Messages moved to the DLQ stream", ["stream", "consumer"])
REDELIVERIES = Counter(
    "genimage_redeliveries_total",
    "Failed deliveries handed back for another try, by kind of failure (transient: a dependency was away)",
    ["stream", "consumer", "failure"],
)
# Context key of the dependency probes a service registers (``watch_dependencies``).
PROBES = "genimage_dependency_probes"


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


def make_broker(
    servers: str,
    *,
    service: str,
    registry: CollectorRegistry = REGISTRY,
    policy: RedeliveryPolicy | None = None,
) -> NatsBroker:
    """``policy``: when to redeliver or dead-letter a failed JetStream message; by default the
    shared ``TRANSIENT_RETRY_*`` settings with the shared content-failure bound."""
    policy = policy or RedeliveryPolicy.from_settings(CommonSettings())
    return NatsBroker(
        servers,
        middlewares=[
            NatsTelemetryMiddleware(),
            PrometheusMiddleware(settings_provider_factory=_metrics_settings, registry=registry, app_name=service),
            error_policy(policy),
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


def watch_dependencies(broker: NatsBroker, probes: Mapping[str, Probe]) -> None:
    """Register what this service depends on (``name → async check that raises when down``):
    a failure no rule classifies is transient while one of them does not answer."""
    broker.context.set_global(PROBES, dict(probes))


def error_policy(policy: RedeliveryPolicy) -> type[ErrorPolicyMiddleware]:
    """The middleware class bound to ``policy`` (FastStream instantiates it per message)."""
    return type("ErrorPolicyMiddleware", (ErrorPolicyMiddleware,), {"policy": policy, "transient": TransientCounts()})


class ErrorPolicyMiddleware(BaseMiddleware):
    """What a failure means, for every subscriber of a service.

    - Request/reply: a domain or validation error becomes the ``{"error": {...}}`` reply, a
      dependency that is away a ``service_unavailable`` one and a bug an ``internal_error`` one
      (at once, not after the caller's timeout).
    - JetStream (see ``redelivery.py``): a message that can never be decoded is dead-lettered at
      once; a transient failure (a dependency away) is redelivered with capped exponential
      backoff for as long as it lasts, up to the long ceiling; a failure of the message's own
      is redelivered a bounded number of times, then copied to ``dlq.<stream>.<consumer>`` and
      terminated. Nothing escapes as a plain exception: FastStream would terminate the message.
    """

    policy: ClassVar[RedeliveryPolicy] = RedeliveryPolicy()
    transient: ClassVar[TransientCounts] = TransientCounts()

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        raw = msg.raw_message
        reply = getattr(raw, "reply", "") or ""
        if not reply.startswith("$JS.ACK."):
            return await self._request(call_next, msg)
        try:
            result = await call_next(msg)
        except (AckMessage, NackMessage, RejectMessage):
            raise
        except Exception as exc:
            await self._on_failure(msg, exc)
            raise  # pragma: no cover - _on_failure always raises
        meta = raw.metadata
        self.transient.forget((meta.stream, meta.consumer, meta.sequence.stream))
        return result

    async def _on_failure(self, msg: StreamMessage[Any], exc: Exception) -> NoReturn:
        raw = msg.raw_message
        meta = raw.metadata
        key = (meta.stream, meta.consumer, meta.sequence.stream)
        delivered = meta.num_delivered
        failure = await classify(exc, self._probes())
        before = self.transient.get(key)
        decision = self.policy.decide(failure, delivered=delivered, transient_before=before)
        if failure is Failure.TRANSIENT:
            self.transient.add(key)
        if decision.dead_letter:
            try:
                await self._dead_letter(msg, exc, delivered, failure)
            except Exception as dlq_exc:
                # The DLQ is on NATS too: keep the message rather than terminate it unrecorded.
                log.warning("dead-lettering failed, will retry", extra={"error": repr(dlq_exc)})
                raise NackMessage(delay=self.policy.transient_delay(before + 1)) from exc
            self.transient.forget(key)
            raise RejectMessage() from exc
        REDELIVERIES.labels(stream=meta.stream, consumer=meta.consumer, failure=failure.value).inc()
        extra = {
            "subject": raw.subject,
            "delivered": delivered,
            "failure": failure.value,
            "delay_s": decision.delay_s,
            "error": repr(exc)[:500],
        }
        if failure is Failure.TRANSIENT:
            # Expected while a dependency is away: one line, no stack trace per message.
            log.warning("dependency unavailable, message will be redelivered", extra=extra)
        else:
            log.warning("message handling failed, will be redelivered", extra=extra, exc_info=exc)
        raise NackMessage(delay=decision.delay_s) from exc

    def _probes(self) -> dict[str, Probe]:
        broker = self.context.get("broker")

        async def nats() -> None:
            if broker is None or not broker.connection or not broker.connection.is_connected:
                raise ConnectionError("NATS is not connected")

        return {"nats": nats, **(self.context.get(PROBES) or {})}

    async def _request(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except DomainError as exc:
            return exc.to_reply()
        except ValidationError as exc:
            details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
            return ValidationFailed("invalid request", errors=details[:10]).to_reply()
        except Exception as exc:
            if is_transient(exc):
                log.warning("request failed: dependency unavailable", extra={"error": repr(exc)[:500]})
                return ServiceUnavailable("a dependency of this service is unavailable, try again").to_reply()
            # A bug: answer now with the generic error rather than leave the caller to its timeout
            # (which it would report as the service being unavailable).
            log.exception("request handler failed", extra={"subject": msg.raw_message.subject})
            return DomainError().to_reply()

    async def _dead_letter(self, msg: StreamMessage[Any], exc: Exception, delivered: int, failure: Failure) -> None:
        broker = self.context.get("broker")
        await dead_letter_message(
            broker.connection.jetstream(), msg.raw_message, exc, delivered=delivered, failure=failure.value
        )


async def dead_letter_message(
    js: JetStreamContext, msg: Msg, exc: BaseException, *, delivered: int, failure: str = "content"
) -> None:
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
            # poison (undecodable), content (failed on its own), transient (ceiling reached).
            "Genimage-Dlq-Failure": failure,
            "Genimage-Dlq-Error": repr(exc)[:500],
            "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{meta.sequence.stream}",
        }
    )
    await js.publish(dead_letter(stream, consumer), msg.data, headers=headers, stream=DLQ)
    DEAD_LETTERS.labels(stream=stream, consumer=consumer).inc()
    log.error(
        "message dead-lettered",
        extra={
            "subject": msg.subject,
            "stream": stream,
            "consumer": consumer,
            "failure": failure,
            "error": repr(exc)[:300],
        },
    )
