from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from genimage_common.catalog import DEFAULT_MODELS_FILE
from genimage_common.settings import CommonSettings, s3_dev_secrets, shared

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789"  # noqa: S105 (refused in production)


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)
    service_name = "gateway"
    dev_secrets: ClassVar[dict[str, str]] = {"jwt_secret": DEV_JWT_SECRET, **s3_dev_secrets()}

    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    jwt_secret: str = Field(DEV_JWT_SECRET, min_length=32)
    jwt_issuer: str = "genimage"
    access_token_ttl_s: int = Field(15 * 60, ge=60)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, ge=3600)
    presign_ttl_s: int = Field(300, ge=10, le=3600)
    rpc_timeout_s: float = 5.0
    models_file: str = shared(str(DEFAULT_MODELS_FILE), "GENIMAGE_MODELS")
    # Bootstrap: signing up with this email makes an admin (empty: nobody).
    admin_email: str = ""
