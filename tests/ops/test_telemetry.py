"""genimage_common.telemetry in real processes: OTLP export over HTTP/protobuf and gRPC configured
only by the standard OTEL_* variables, service.name per process, off when unset, probes unsampled."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ops.otlp import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.polling import eventually

# Every test runs its script in a fresh interpreter (tracing is configured once per process).
pytestmark = pytest.mark.e2e

SPAN = """
from opentelemetry import trace
from genimage_common.telemetry import configure_tracing
provider = configure_tracing("probe-service")
print("configured" if provider else "off")
with trace.get_tracer("test").start_as_current_span("hello"):
    pass
if provider:
    provider.shutdown()
"""

FASTAPI = """
from fastapi import FastAPI
from fastapi.testclient import TestClient
from genimage_common.telemetry import configure_tracing, instrument_fastapi
provider = configure_tracing("api")
app = FastAPI()

@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ok"}

@app.get("/v1/things/{thing_id}")
def thing(thing_id: str) -> dict:
    return {"id": thing_id}

if INSTRUMENT:
    instrument_fastapi(app)
with TestClient(app) as client:
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/things/42").status_code == 200
provider.shutdown()
"""


def _run(script: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_go_to_the_otlp_endpoint_of_the_environment(protocol: str) -> None:
    receiver = (OtlpGrpcReceiver if protocol == "grpc" else OtlpHttpReceiver)().start()
    try:
        out = _run(SPAN, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
        assert out == "configured"
        spans = eventually(lambda: [s for s in receiver.spans() if s.name == "hello"], what="the span arrived")
        assert [s.service for s in spans] == ["probe-service"]
    finally:
        receiver.stop()


def test_otel_service_name_wins_over_the_default() -> None:
    receiver = OtlpHttpReceiver().start()
    try:
        _run(SPAN, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="billing-eu-1")
        eventually(lambda: receiver.spans(), what="a span arrived")
        assert receiver.services() == {"billing-eu-1"}
    finally:
        receiver.stop()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["unset", "sdk-disabled", "exporter-none"],
)
def test_tracing_is_off_unless_asked_for(env: dict[str, str]) -> None:
    assert _run(SPAN, **env) == "off"


@pytest.mark.parametrize("instrument", [False, True], ids=["sampler-only", "instrument_fastapi"])
def test_http_requests_are_traced_and_probes_are_not(instrument: bool) -> None:
    receiver = OtlpHttpReceiver().start()
    try:
        _run(f"INSTRUMENT = {instrument}\n" + FASTAPI, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        server = eventually(
            lambda: [s for s in receiver.spans() if s.kind == 2], what="the server span of /v1/things/42"
        )
        assert [s.name for s in server] == ["GET /v1/things/{thing_id}"]
        assert not [s for s in receiver.spans() if "readyz" in s.name or s.attributes.get("url.path") == "/readyz"]
    finally:
        receiver.stop()
