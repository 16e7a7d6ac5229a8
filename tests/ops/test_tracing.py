"""One generation is one trace: from POST /v1/generations through billing, generation and gallery,
across four service processes that export over OTLP/HTTP to an in-process receiver."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest

from tests.api import TestUser, generated, signup, wait_credits
from tests.ops.conftest import TracedStack
from tests.ops.otlp import ReceivedSpan
from tests.polling import eventually

pytestmark = pytest.mark.e2e

FOUR = {"gateway", "billing", "generation", "gallery"}
SERVER = 2  # OTLP SpanKind SERVER
PROMPT = "a trace through four services"


@dataclass
class TracedGeneration:
    id: str
    user: TestUser
    trace_id: str

    @property
    def original_key(self) -> str:
        return f"users/{self.user.id}/generations/{self.id}/0.png"


@pytest.fixture(scope="module")
def generation(traced_stack: TracedStack) -> TracedGeneration:
    """Signup, then one image generation through the traced gateway, until billing committed it."""
    with httpx.Client(base_url=traced_stack.services["gateway"].url, timeout=30) as api:
        user = signup(api)
        gid = generated(api, user, PROMPT, width=256, height=256)["id"]
        # Billing commits after the terminal event: the last hop of the trace.
        wait_credits(api, user, {"available": 15, "reserved": 0}, what="credits committed")
    key = f"users/{user.id}/generations/{gid}/0.png"

    def stored() -> ReceivedSpan | None:
        return next((s for s in traced_stack.receiver.spans() if s.attributes.get("aws.s3.key") == key), None)

    put = eventually(stored, what=f"the S3.PutObject span of {key}")
    return TracedGeneration(gid, user, put.trace_id)


def _summary(spans: list[ReceivedSpan]) -> str:
    return json.dumps(sorted({(s.service, s.name) for s in spans}))


def _http_root(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
    return next(
        (s for s in spans if s.service == "gateway" and s.kind == SERVER and s.name == "POST /v1/generations"), None
    )


def test_every_process_exports_under_its_own_service_name(traced_stack: TracedStack, generation) -> None:
    assert traced_stack.receiver.services() == FOUR


def test_one_trace_from_the_http_request_through_all_four_services(traced_stack: TracedStack, generation) -> None:
    receiver = traced_stack.receiver

    def whole() -> list[ReceivedSpan] | None:
        spans = receiver.trace(generation.trace_id)
        committed = {s.service for s in spans if s.name == f"generation.completed.{generation.user.id} process"}
        # Spans arrive as they end: a consumer's span ends (and is exported) after its children.
        ids = {s.span_id for s in spans}
        dangling = [s for s in spans if s.parent_span_id.strip("0") and s.parent_span_id not in ids]
        complete = FOUR <= receiver.services(spans) and committed >= {"billing", "gallery"} and not dangling
        return spans if complete else None

    try:
        spans = eventually(whole, what="one trace with spans of all four services")
    except AssertionError:
        spans = receiver.trace(generation.trace_id)
        ids = {s.span_id for s in spans}
        dangling = _summary([s for s in spans if s.parent_span_id.strip("0") and s.parent_span_id not in ids])
        raise AssertionError(
            f"trace {generation.trace_id} holds {_summary(spans)}; spans whose parent never arrived: {dangling}"
        ) from None

    # The HTTP request is the root: every other span of the generation descends from it.
    root = _http_root(spans)
    assert root is not None, f"no gateway server span POST /v1/generations in {_summary(spans)}"
    assert root.parent_span_id in ("", "0" * 16), root
    by_id = {s.span_id: s for s in spans}

    def descends_from_root(span: ReceivedSpan) -> bool:
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
        return span is root

    orphans = [(s.service, s.name) for s in spans if not descends_from_root(s)]
    assert not orphans, f"spans of the trace not under the HTTP request: {orphans}"

    names = {(s.service, s.name) for s in spans}
    # The credit reservation (request/reply) happened inside the request, before the job was queued...
    assert ("billing", "rpc.billing.reserve process") in names, _summary(spans)
    # ...the worker consumed the request and stored the image in the same trace...
    assert any(svc == "generation" and name.endswith(" process") for svc, name in names), _summary(spans)
    # ...and billing and gallery applied its outcome there too.
    assert ("gallery", f"generation.requested.{generation.user.id} process") in names, _summary(spans)


def test_sql_and_object_storage_spans_join_the_trace(traced_stack: TracedStack, generation) -> None:
    receiver = traced_stack.receiver

    def sql_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.attributes.get("db.system.name") == "postgresql"]

    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.trace(generation.trace_id)
        return spans if {s.service for s in sql_of(spans)} >= {"gateway", "billing", "gallery"} else None

    try:
        spans = eventually(complete, what="SQL spans of gateway, billing and gallery in the generation's trace")
    except AssertionError:
        raise AssertionError(_summary(receiver.trace(generation.trace_id))) from None

    keys = {s.attributes.get("aws.s3.key") for s in spans if s.service == "generation" and s.name == "S3.PutObject"}
    assert {generation.original_key, generation.original_key.replace("0.png", "0.thumb.webp")} <= keys, keys
    for s in sql_of(spans):
        assert s.attributes["db.operation.name"] in s.name
        # The statement with placeholders, never bound values such as the prompt.
        assert PROMPT not in str(s.attributes.get("db.query.text")), s


def test_probes_are_not_traced(traced_stack: TracedStack, generation) -> None:
    # The readiness of all four services was polled at start-up.
    probed = [s for s in traced_stack.receiver.spans() if s.name.endswith(("/readyz", "/healthz", "/metrics"))]
    assert not probed, sorted({(s.service, s.name) for s in probed})


def test_log_lines_carry_the_trace_and_the_generation(traced_stack: TracedStack, generation) -> None:
    lines = [
        json.loads(line)
        for line in (traced_stack.log_dir / "generation.log").read_text().splitlines()
        if line.startswith("{")
    ]
    about = [line for line in lines if line.get("generation_id") == generation.id]
    assert about, "the generation worker logged nothing with the generation_id"
    for line in about:
        assert line["user_id"] == generation.user.id, line
        assert line.get("trace_id") == generation.trace_id, line
        assert len(line.get("span_id", "")) == 16, line
