"""Service logs are JSON lines with domain context, and never carry credentials or e-mail addresses."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest

from genimage_common.logging import _ContextFilter, json_formatter, log_context, redact
from genimage_devstack.stack import ServiceProcess
from tests.api import generated, signup

PASSWORD = "correct horse battery"  # what tests/api.py signs up with


def _formatted(emit) -> dict:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(json_formatter())
    handler.addFilter(_ContextFilter("test"))
    logger = logging.getLogger("tests.ops.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    [line] = buffer.getvalue().splitlines()
    return json.loads(line)


def test_context_fields_and_service_on_every_line() -> None:
    def emit(log: logging.Logger) -> None:
        with log_context(generation_id="g-1", user_id="u-1"), log_context(attempt=2):
            log.warning("job failed", extra={"code": "provider_error"})

    line = _formatted(emit)
    assert {k: line[k] for k in ("level", "message", "service", "generation_id", "user_id", "attempt", "code")} == {
        "level": "WARNING",
        "message": "job failed",
        "service": "test",
        "generation_id": "g-1",
        "user_id": "u-1",
        "attempt": "2",
        "code": "provider_error",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_credentials_and_emails_are_redacted_wherever_they_appear() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    api_key = "gi_" + "k" * 43

    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError(f"login failed for ada@example.com with {api_key}")
        except ValueError:
            log.exception(
                "request from grace@example.org, Authorization: Bearer abcdefghijklmnop",
                extra={
                    "password": PASSWORD,
                    "refresh_token": "r-secret",
                    "body": {"email": "x@y.io", "nested": [{"api_key": "k"}], "token": jwt},
                    "object_key": "users/1/generations/2/0.png",
                },
            )

    line = _formatted(emit)
    text = json.dumps(line)
    for secret in (
        "ada@example.com",
        "grace@example.org",
        "x@y.io",
        api_key,
        jwt,
        PASSWORD,
        "r-secret",
        "abcdefghijklmnop",
    ):
        assert secret not in text, secret
    assert line["password"] == line["refresh_token"] == "[redacted]"
    assert line["body"]["email"] == "[redacted]" and line["body"]["nested"] == [{"api_key": "[redacted]"}]
    # Ordinary fields stay as they are.
    assert line["object_key"] == "users/1/generations/2/0.png"
    assert "ValueError" in line["exc_info"]


def test_redact_keeps_text_without_secrets() -> None:
    text = "generation 01a2 completed in 812 ms on nats://nats:4222"
    assert redact(text) == text


@pytest.fixture(scope="module")
def one_generation(services: dict[str, ServiceProcess]) -> dict:
    """Signup and one generation through the session's services; what a leak could carry."""
    with httpx.Client(base_url=services["gateway"].url, timeout=30) as api:
        user = signup(api)
        gid = generated(api, user, "a logged lighthouse", width=256, height=256)["id"]
        login = api.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
        secrets = {user.email, PASSWORD, user.token}
        if login.status_code == 200:
            secrets |= {login.json()["access_token"], login.json()["refresh_token"]}
    return {"generation_id": gid, "user_id": user.id, "secrets": secrets}


def _log_lines(services: dict[str, ServiceProcess]) -> dict[str, list[str]]:
    lines = {}
    for name, proc in services.items():
        assert proc.log_path is not None
        lines[name] = proc.log_path.read_text(errors="replace").splitlines()
    return lines


def test_no_secret_or_email_in_any_service_log(services: dict[str, ServiceProcess], one_generation: dict) -> None:
    for name, lines in _log_lines(services).items():
        text = "\n".join(lines)
        for secret in one_generation["secrets"]:
            assert secret not in text, f"{name} logged a secret or an e-mail address"
        emails = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b", text)
        assert not emails, f"{name} logged e-mail addresses: {emails[:3]}"


def test_service_logs_are_json_lines_with_context(services: dict[str, ServiceProcess], one_generation: dict) -> None:
    logs = _log_lines(services)
    for name, lines in logs.items():
        assert lines, f"{name} logged nothing"
        for line in lines:
            record = json.loads(line)  # every line, not only ours: FastStream, uvicorn, warnings
            assert {"time", "level", "logger", "message", "service"} <= record.keys(), record
            assert record["service"] == name, record
    worker = [json.loads(line) for line in logs["generation"]]
    about = [r for r in worker if r.get("generation_id") == one_generation["generation_id"]]
    assert about, "the generation worker logged nothing about the generation"
    assert {r.get("user_id") for r in about} == {one_generation["user_id"]}
