"""The served OpenAPI document: complete, and true (schemathesis: no 5xx, no response that
violates it)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from genimage_devstack.stack import ServiceProcess
from tests.api import PROBLEM, TestUser, signup

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_user(services: dict[str, ServiceProcess]) -> TestUser:
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as client:
        return signup(client)


def test_api_conforms_to_its_schema(services: dict[str, ServiceProcess], fuzz_user: TestUser) -> None:
    """Every operation, a few generated requests each (schemathesis' pytest loader does not
    support this pytest yet, so the operations are driven through their strategies)."""
    schema = schemathesis.openapi.from_url(f"{services['gateway'].url}/openapi.json")
    failures: dict[str, str] = {}
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue  # SSE streams never end on their own: see test_live.py

        @settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers=fuzz_user.auth, checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect them all, then fail with the list
            failures[operation.label] = str(exc)[:2000]
        tested += 1
    assert tested >= 35
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())


def test_every_operation_is_documented(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    components = document["components"]["schemas"]
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(operations) >= 35
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("tags"), where
        responses = op["responses"]
        assert any(s.startswith("2") or s == "302" for s in responses), where
        if path in ("/healthz", "/readyz"):
            continue
        for status in ("429", "500", "503"):
            assert status in responses, (where, status)
        for status, response in responses.items():
            if int(status) >= 400:
                assert set(response["content"]) == {PROBLEM}, (where, status)
            assert "RateLimit" in response["headers"], (where, status)
        if op.get("security"):
            assert "401" in responses, where
        body = op.get("requestBody")
        if body:
            assert "413" in responses and "422" in responses, where
            media = next(iter(body["content"].values()))
            ref = media.get("schema", {}).get("$ref")
            if "multipart/form-data" in body["content"]:
                continue  # a file: described, nothing to exemplify
            if ref:
                model = components[ref.rsplit("/", 1)[1]]
                assert model.get("examples") or any(p.get("examples") for p in model.get("properties", {}).values()), (
                    f"{where}: request body without examples"
                )
            else:
                assert media.get("example") or media.get("examples"), where
    assert components["Problem"]["examples"]
    assert document["components"]["headers"]["Retry-After"]


def test_the_asyncapi_document_shows_what_the_gateway_consumes_and_sends(api: httpx.Client) -> None:
    r = api.get("/docs/asyncapi.json")
    assert r.status_code == 200, r.text
    document = r.json()
    addresses = {channel["address"] for channel in document["channels"].values()}
    consumed = ["generation.started", "generation.progress", "generation.completed", "generation.failed"]
    assert {f"{name}.*" for name in [*consumed, "generation.canceled"]} <= addresses
    assert {"generation.requested.{user_id}", "rpc.billing.reserve", "rpc.gallery.get_generation"} <= addresses
    schemas = document["components"]["schemas"]
    # Real payload schemas: the event models and the contract's request models.
    assert "outputs" in schemas["GenerationCompleted"]["properties"]
    assert {"generation_id", "user_id", "amount"} <= set(schemas["ReserveRequest"]["properties"])
    page = api.get("/docs/asyncapi")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "TryItPlugin" not in page.text  # a public page publishes nothing to the broker
    assert "/docs/asyncapi" not in api.get("/openapi.json").json()["paths"]
