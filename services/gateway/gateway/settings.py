from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from genimage_common.catalog import DEFAULT_MODELS_FILE
from genimage_common.settings import CommonSettings, s3_dev_secrets, shared

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789"  # noqa: S105 (refused in production)
DEV_WEBHOOK_KEY = "dev-only-webhook-signing-key-change-me-0123"


def _split(value: object) -> object:
    """Lists from the environment are comma-separated (``a,b``) or JSON (``["a", "b"]``)."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)
    service_name = "gateway"
    dev_secrets: ClassVar[dict[str, str]] = {
        "jwt_secret": DEV_JWT_SECRET,
        "webhook_signing_key": DEV_WEBHOOK_KEY,
        **s3_dev_secrets(),
    }

    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    jwt_secret: str = Field(DEV_JWT_SECRET, min_length=32)
    jwt_issuer: str = "genimage"
    access_token_ttl_s: int = Field(15 * 60, ge=60)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, ge=3600)
    presign_ttl_s: int = Field(300, ge=10, le=3600)
    rpc_timeout_s: float = 5.0
    # How long `generation.requested` is retried (deduplicated, so safe) before the request is
    # given up and its credits released.
    publish_deadline_s: float = Field(5.0, gt=0, le=60)
    models_file: str = shared(str(DEFAULT_MODELS_FILE), "GENIMAGE_MODELS")
    # Bootstrap: signing up with this email makes an admin (empty: nobody).
    admin_email: str = ""

    # --- external OIDC (empty issuer: off) ---------------------------------------------------
    # Tokens whose `iss` is this issuer are verified with its JWKS and mapped to a user on
    # first sight (Clerk, Auth0, Google, Keycloak...).
    oidc_issuer: str = ""
    # Default: discovered from `<issuer>/.well-known/openid-configuration`.
    oidc_jwks_url: str = ""
    # Expected `aud` (empty: not checked — set it whenever the issuer puts one in its tokens).
    oidc_audience: str = ""
    oidc_algorithms: CsvList = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_jwks_ttl_s: float = Field(600, ge=1)

    # --- request limits --------------------------------------------------------------------
    # Every request body (JSON) at most this large; uploads have their own limit.
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    # Generous defaults: tune per deployment. One window, GCRA (smooth, no boundary bursts).
    rate_limit_window_s: int = Field(60, ge=1, le=86400)
    rate_limit_user: int = Field(3000, ge=1)
    rate_limit_api_key: int = Field(3000, ge=1)
    rate_limit_anonymous: int = Field(3000, ge=1)
    # Login attempts per email address per window (password guessing).
    rate_limit_login: int = Field(30, ge=1)
    # Generations accepted and not yet finished, per user, across replicas.
    max_inflight_generations: int = Field(32, ge=1)
    # An in-flight slot whose terminal event never arrives is freed after this long.
    inflight_ttl_s: float = Field(3600, ge=60)
    ratelimit_bucket: str = Field("gateway_ratelimits", pattern=r"^[a-zA-Z0-9_-]+$")
    inflight_bucket: str = Field("gateway_inflight", pattern=r"^[a-zA-Z0-9_-]+$")

    # --- idempotency -------------------------------------------------------------------------
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)
    # A request holding a key longer than this (a crashed replica) no longer blocks it.
    idempotency_lease_s: float = Field(120, ge=5)
    # Storing a request's outcome (or giving its key back) is retried on fresh connections for
    # this long; past it the client hears 503 and this replica keeps retrying in the background.
    idempotency_store_deadline_s: float = Field(3, gt=0, le=30)

    # --- live progress -------------------------------------------------------------------------
    prefer_wait_max_s: float = Field(60, ge=0, le=60)
    sse_heartbeat_s: float = Field(15, gt=0)
    # Read-your-writes grace: a generation just accepted may not be projected by the gallery yet.
    projection_grace_s: float = Field(3, ge=0)

    # --- webhooks --------------------------------------------------------------------------
    webhook_signing_key: str = Field(DEV_WEBHOOK_KEY, min_length=32)
    # CIDRs a webhook may target although private/loopback/link-local (SSRF guard); e.g.
    # `127.0.0.0/8,::1/128` for local tests. Empty: only public addresses.
    webhook_allowed_networks: CsvList = Field(default_factory=list)
    # False: only the allowed networks are valid targets (locked-down deployments; tests).
    webhook_public_targets: bool = True
    webhook_timeout_s: float = Field(10, gt=0, le=60)
    # Retry schedule: base * factor^(attempt-1), capped, with ±10 % jitter; the defaults spread
    # 8 attempts over about a day (5 s, 20 s, 80 s, 5 min, 21 min, 1.4 h, 5.7 h, 10 h).
    webhook_max_attempts: int = Field(8, ge=1, le=30)
    webhook_retry_base_s: float = Field(5, gt=0)
    webhook_retry_factor: float = Field(4, ge=1)
    webhook_retry_max_s: float = Field(10 * 3600, gt=0)
    webhook_poll_interval_s: float = Field(1.0, gt=0)
    webhook_concurrency: int = Field(8, ge=1, le=64)

    # --- uploads -------------------------------------------------------------------------------
    upload_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    upload_max_pixels: int = Field(40_000_000, ge=1)
    # Memory one upload may need while decoded, converted and re-encoded, from its header
    # (width x height x bytes per pixel of each step: about 9.5 bytes a pixel for PNG and
    # baseline JPEG, 15 for progressive JPEG, 25 for WebP): 256 MiB takes a 24-megapixel
    # JPEG photo and refuses a 40-megapixel PNG.
    upload_max_decoded_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    # What all uploads of this process may need at once; an upload waits for its share up to
    # `upload_memory_wait_s`, then is refused with 503.
    upload_memory_budget_bytes: int = Field(384 * 1024 * 1024, ge=1024 * 1024)
    upload_memory_wait_s: float = Field(10, ge=0, le=300)
    upload_concurrency: int = Field(2, ge=1, le=16)

    # --- Stripe --------------------------------------------------------------------------------
    # Signing secret of the webhook endpoint (`whsec_...`); empty: the route answers 503.
    stripe_webhook_secret: str = ""
    stripe_tolerance_s: int = Field(300, ge=1)

    # Consumers (webhooks, in-flight release) and the webhook sender run in this replica.
    # Off for API-only replicas.
    background_workers: bool = True

    _split_lists = field_validator("oidc_algorithms", "webhook_allowed_networks", mode="before")(_split)
