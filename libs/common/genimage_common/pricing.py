"""What a request costs, in credits: the price table the gateway reserves from, and the one
formula of what a completion charges (``share``), which billing applies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Kind = Literal["image", "video"]


def share(amount: int, units: int, delivered: int) -> int:
    """What ``delivered`` of ``units`` reserved outputs cost out of the ``amount`` reserved for
    them: proportional, rounded down, never more than the amount (nor less than nothing)."""
    return min(amount, amount * max(delivered, 0) // units)


class Pricing(BaseSettings):
    """Defaults are the product's list prices; every one is configurable (``PRICING_*``)."""

    model_config = SettingsConfigDict(env_prefix="PRICING_", extra="ignore")

    image_credits_per_output: int = Field(5, ge=0)
    video_credits_per_clip: int = Field(10, ge=0)
    signup_grant: int = Field(20, ge=0)

    def unit_cost(self, kind: Kind) -> int:
        return self.image_credits_per_output if kind == "image" else self.video_credits_per_clip

    def cost(self, kind: Kind, n: int) -> int:
        """Price of a request for ``n`` outputs (images, or clips)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        return self.unit_cost(kind) * n
