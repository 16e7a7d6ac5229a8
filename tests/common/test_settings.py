from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings


def test_shared_variables_are_unprefixed_and_own_ones_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://example:4222")
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    s = GatewaySettings()
    assert s.nats_url == "nats://example:4222"
    assert s.port == 9999


def test_production_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="jwt_secret"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "x" * 40)
    monkeypatch.setenv("S3_SECRET_KEY", "a-real-secret")
    with pytest.raises(ValidationError, match="webhook_signing_key"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_WEBHOOK_SIGNING_KEY", "y" * 40)
    assert GatewaySettings().environment == "production"
