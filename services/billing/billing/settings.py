from pydantic_settings import SettingsConfigDict

from genimage_common.settings import CommonSettings


class BillingSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)
    service_name = "billing"

    port: int = 8001
    hold_ttl_s: int = 15 * 60
    sweep_interval_s: float = 5.0
    consumer_concurrency: int = 8
