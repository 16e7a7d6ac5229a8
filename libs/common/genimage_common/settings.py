"""Settings shared by every service; each service subclasses with its own ``env_prefix``.

Shared infrastructure variables are unprefixed (``NATS_URL``, ``DATABASE_URL``,
``S3_ENDPOINT``...) so one environment configures the whole stack; a service's own
knobs carry its prefix (``GATEWAY_``, ``BILLING_``...).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def shared(default: Any, env: str, **kw: Any) -> Any:
    """A field read from its unprefixed environment variable (or set by name)."""
    return Field(default, validation_alias=AliasChoices(env, env.lower()), **kw)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Names of fields whose development default must not reach production.
    dev_secrets: ClassVar[dict[str, str]] = {}

    service_name: ClassVar[str] = "genimage"

    environment: Literal["development", "test", "production"] = shared("development", "ENVIRONMENT")
    log_level: str = shared("INFO", "LOG_LEVEL")

    nats_url: str = shared("nats://127.0.0.1:4222", "NATS_URL")
    database_url: str = shared("postgresql+asyncpg://postgres@127.0.0.1:5432/genimage", "DATABASE_URL")

    s3_endpoint: str = shared("http://127.0.0.1:9000", "S3_ENDPOINT")
    # What clients reach for presigned URLs, when it differs from the internal endpoint.
    s3_public_endpoint: str | None = shared(None, "S3_PUBLIC_ENDPOINT")
    s3_access_key: str = shared("genimage", "S3_ACCESS_KEY")
    s3_secret_key: str = shared("genimage-secret", "S3_SECRET_KEY")
    s3_region: str = shared("us-east-1", "S3_REGION")
    s3_bucket: str = shared("genimage-media", "S3_BUCKET")
    # An S3 server that accepts a connection and never answers must not hold a job (or a
    # request) for ever: connect and read timeouts (the read one bounds each wait for bytes,
    # not a whole transfer), and retries of a call that failed on the network, a timeout or a
    # 5xx. Worst case for one call: about (retries + 1) * (connect + read).
    s3_connect_timeout_s: float = shared(5, "S3_CONNECT_TIMEOUT_S", gt=0)
    s3_read_timeout_s: float = shared(30, "S3_READ_TIMEOUT_S", gt=0)
    s3_max_retries: int = shared(2, "S3_MAX_RETRIES", ge=0, le=10)

    # JetStream stream limits: keep everything by default.
    stream_max_bytes: int = shared(-1, "STREAM_MAX_BYTES")
    stream_max_age_s: float = shared(0, "STREAM_MAX_AGE_S", ge=0)
    stream_replicas: int = shared(1, "STREAM_REPLICAS", ge=1, le=5)
    stream_duplicate_window_s: float = shared(120, "STREAM_DUPLICATE_WINDOW_S", ge=120)

    # A message whose handling failed because a dependency (PostgreSQL, NATS, S3, a peer) is
    # away is redelivered after base, 2·base, 4·base ... capped at max, for as long as the
    # dependency stays away; only past the ceiling (hours) is it dead-lettered after all.
    transient_retry_base_s: float = shared(0.5, "TRANSIENT_RETRY_BASE_S", gt=0)
    transient_retry_max_s: float = shared(30, "TRANSIENT_RETRY_MAX_S", gt=0)
    transient_retry_ceiling_s: float = shared(6 * 3600, "TRANSIENT_RETRY_CEILING_S", gt=0)

    # Health/metrics HTTP port of a worker, or the API port of the gateway.
    host: str = "127.0.0.1"
    port: int = 0

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> CommonSettings:
        if self.environment == "production":
            weak = [name for name, dev in self.dev_secrets.items() if getattr(self, name) == dev]
            if weak:
                raise ValueError(f"development default still set in production for: {', '.join(weak)}")
        return self


def s3_dev_secrets() -> dict[str, str]:
    return {"s3_secret_key": "genimage-secret"}
