"""Metrics and traces. Export is configured only by the standard ``OTEL_*`` variables; off when unset.

Traces: ``configure_tracing(service)`` installs an OTLP exporter (``http/protobuf`` or ``grpc``,
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``) when ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set, with
``service.name`` = ``OTEL_SERVICE_NAME`` or the service. Spans come from:

- NATS publish / consume / request: FastStream's ``NatsTelemetryMiddleware`` (``make_broker``),
  which carries W3C ``traceparent`` in message headers;
- HTTP: FastAPI's own telemetry on the global provider (``instrument_fastapi(app)`` drops probes);
- SQL: ``instrument_sqlalchemy(engine)`` (called by ``database.make_engine``);
- object storage: ``storage_span(...)`` (used by ``storage.ObjectStore``).

SQL instrumentation is only installed while export is enabled, so a service without ``OTEL_*``
pays nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

_configured: set[str] = set()

# Probes and scrapes would be most of the spans and tell nothing.
_UNTRACED = frozenset({"healthz", "readyz", "metrics"})


def _otel_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _span_exporter():  # type: ignore[no-untyped-def]
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


class _DropProbes(Sampler):
    """Kubernetes probes and Prometheus scrapes every few seconds would be most of the traces and
    tell nothing: their server spans are not sampled (nor, being parent-based, their children)."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind == SpanKind.SERVER and attributes and str(attributes.get("url.path", "")).strip("/") in _UNTRACED:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"DropProbes{{{self._delegate.get_description()}}}"


def configure_tracing(service: str) -> TracerProvider | None:
    """Install a tracer provider exporting over OTLP when ``OTEL_EXPORTER_OTLP_*`` is set."""
    if service in _configured or not _otel_enabled():
        return None
    _configured.add(service)
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
    # The sampler OTEL_TRACES_SAMPLER asks for (parent-based always-on by default), minus probes.
    configured = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
    provider = TracerProvider(resource=resource, sampler=_DropProbes(configured))
    provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    trace.set_tracer_provider(provider)
    return provider


def trace_headers() -> dict[str, str]:
    """W3C ``traceparent`` (and ``tracestate``) of the current span, for message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


# --- HTTP -------------------------------------------------------------------------------------


def instrument_fastapi(app: Any) -> None:
    """HTTP server spans of a FastAPI app, minus probes and scrapes. Call once, after creating the app.

    FastAPI (native telemetry, the ``telemetry=`` argument) traces every request itself through
    the global tracer provider that ``configure_tracing`` installs (route templates as span
    names, an incoming ``traceparent`` continued), and the provider's sampler already drops
    probes; this also spares FastAPI the work of tracing ``/healthz``, ``/readyz`` and ``/metrics``.
    """
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or "exclude" not in config:
        raise TypeError("instrument_fastapi needs a FastAPI app with native telemetry (FastAPI(telemetry=...))")
    previous = config.get("exclude")

    def exclude(scope: Any) -> bool:
        if scope.get("path", "").strip("/") in _UNTRACED:
            return True
        return bool(previous(scope)) if previous is not None else False

    config["exclude"] = exclude


# --- SQL --------------------------------------------------------------------------------------

_SQL_VERB = re.compile(r"^\s*(\w+)")
_SPAN_KEY = "_genimage_otel_span"


def instrument_sqlalchemy(engine: Any) -> None:
    """A client span per SQL statement of ``engine`` (sync or async) run inside a traced operation:
    the statement text with placeholders, never the bound values."""
    if not _otel_enabled():
        return
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)
    if getattr(sync_engine, "_genimage_traced", False):
        return
    sync_engine._genimage_traced = True
    tracer = trace.get_tracer("genimage_common.database")
    url = sync_engine.url
    base: dict[str, Any] = {"db.system.name": "postgresql", "db.system": "postgresql"}
    if url.database:
        base["db.namespace"] = url.database
    if url.host:
        base["server.address"] = url.host
    if url.port:
        base["server.port"] = url.port

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        # Only inside a traced operation: the polling of relays and sweepers would otherwise make
        # a one-span trace of every statement, several per second per replica.
        if context is None or not trace.get_current_span().get_span_context().is_valid:
            return
        match = _SQL_VERB.match(statement)
        verb = match.group(1).upper() if match else "SQL"
        span = tracer.start_span(
            f"{verb} {url.database or 'postgresql'}",
            kind=SpanKind.CLIENT,
            attributes={**base, "db.operation.name": verb, "db.query.text": statement[:2000]},
        )
        setattr(context, _SPAN_KEY, span)

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        span: Span | None = getattr(context, _SPAN_KEY, None)
        if span is not None:
            span.end()
            setattr(context, _SPAN_KEY, None)

    def on_error(exception_context: Any) -> None:
        span: Span | None = getattr(exception_context.execution_context, _SPAN_KEY, None)
        if span is not None:
            exc = exception_context.original_exception
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__name__)
            span.end()
            setattr(exception_context.execution_context, _SPAN_KEY, None)

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", on_error)


# --- object storage ---------------------------------------------------------------------------

_storage_tracer = trace.get_tracer("genimage_common.storage")


@contextmanager
def storage_span(operation: str, *, bucket: str, key: str | None = None) -> Iterator[Span]:
    """A client span around one S3 call (``PutObject``, ``GetObject``...); errors mark it failed."""
    attributes: dict[str, Any] = {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": operation}
    attributes["aws.s3.bucket"] = bucket
    if key is not None:
        attributes["aws.s3.key"] = key
    with _storage_tracer.start_as_current_span(f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


# --- metrics ----------------------------------------------------------------------------------


def build_info(service: str, registry: CollectorRegistry = REGISTRY) -> None:
    """``genimage_build_info{service,version} 1``; calling it again (a second app in one process) is harmless."""
    try:
        ver = version(f"genimage-{service}")
    except PackageNotFoundError:
        ver = "unknown"
    gauge = registry._names_to_collectors.get("genimage_build_info")
    if not isinstance(gauge, Gauge):
        gauge = Gauge(
            "genimage_build_info",
            "Build information of this genimage service",
            ["service", "version"],
            registry=registry,
        )
    gauge.labels(service=service, version=ver).set(1)
