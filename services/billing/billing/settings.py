from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from genimage_common.settings import CommonSettings

from .plans import Plan, check_unique, default_plans


class BillingSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)
    service_name = "billing"

    port: int = 8001
    # How long a reserve holds credits before the sweeper refunds them.
    hold_ttl_s: int = Field(15 * 60, ge=1, le=7 * 24 * 3600)
    sweep_interval_s: float = Field(5.0, gt=0, le=3600)
    sweep_batch: int = Field(100, ge=1, le=10_000)
    # Credit packs for sale, as JSON: [{"id", "name", "credits", "price_cents", "currency", "stripe_price_id"}].
    plans: list[Plan] = Field(default_factory=default_plans, max_length=50)

    @field_validator("plans")
    @classmethod
    def _unique_plans(cls, plans: list[Plan]) -> list[Plan]:
        return check_unique(plans)
