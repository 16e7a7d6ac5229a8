"""NATS conventions in one place: the broker, event publishing, request/reply, dead letters."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, NoReturn

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, PubAck, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus.provider import (
    BatchNatsMetricsSettingsProvider,
    NatsMetricsSettingsProvider,
)
from faststream.prometheus import PrometheusMiddleware
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import ValidationError

from .contracts.rpc import invalid_request
from .delivery import handle_failure
from .errors import DomainError, ServiceUnavailable, error_from_reply
from .events import Event
from .redelivery import BACKOFF, MAX_DELIVER, Probe, RedeliveryPolicy, TransientCounts, is_transient
from .settings import CommonSettings
from .telemetry import trace_headers

log = logging.getLogger(__name__)

__all__ = ["BACKOFF", "MAX_DELIVER", "ErrorPolicyMiddleware", "make_broker", "publish_event", "rpc_call"]

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


def durable(stream: str, name: str, *, batch: int = 16, **options: Any) -> dict[str, Any]:
    """The subscriber options of a durable pull consumer ``name`` on ``stream`` (which
    ``streams.ensure_streams`` declares): ``router.subscriber(subject, **durable(...))``."""
    return {
        "stream": JStream(stream, declare=False),
        "durable": name,
        "pull_sub": PullSub(batch_size=batch, timeout=1.0),
        **options,
    }


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

        async def count_transient() -> None:
            self.transient.add(key)

        verdict = await handle_failure(
            self.context.get("broker").connection.jetstream(),
            raw,
            exc,
            policy=self.policy,
            probes=self._probes(),
            transient_before=self.transient.get(key),
            on_transient=count_transient,
            on_dead_lettered=lambda: self.transient.forget(key),
        )
        if verdict.terminate:
            raise RejectMessage() from exc
        raise NackMessage(delay=verdict.delay_s) from exc

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
            return invalid_request(exc).to_reply()
        except Exception as exc:
            if is_transient(exc):
                log.warning("request failed: dependency unavailable", extra={"error": repr(exc)[:500]})
                return ServiceUnavailable("a dependency of this service is unavailable, try again").to_reply()
            # A bug: answer now with the generic error rather than leave the caller to its timeout
            # (which it would report as the service being unavailable).
            log.exception("request handler failed", extra={"subject": msg.raw_message.subject})
            return DomainError().to_reply()
