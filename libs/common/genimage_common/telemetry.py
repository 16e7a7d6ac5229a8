"""Metrics and traces. Export is configured only by the standard ``OTEL_*`` variables; off when unset."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

_configured: set[str] = set()


def _otel_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
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


def configure_tracing(service: str) -> TracerProvider | None:
    """Install a tracer provider exporting over OTLP when ``OTEL_EXPORTER_OTLP_*`` is set."""
    if service in _configured or not _otel_enabled():
        return None
    _configured.add(service)
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    trace.set_tracer_provider(provider)
    return provider


def trace_headers() -> dict[str, str]:
    """W3C ``traceparent`` (and ``tracestate``) of the current span, for message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def build_info(service: str, registry: CollectorRegistry = REGISTRY) -> None:
    try:
        ver = version(f"genimage-{service}")
    except PackageNotFoundError:
        ver = "unknown"
    gauge = Gauge(
        "genimage_build_info",
        "Build information of this genimage service",
        ["service", "version"],
        registry=registry,
    )
    gauge.labels(service=service, version=ver).set(1)
