"""The model catalog: which models exist and which provider serves each, from the TOML file named
by ``GENIMAGE_MODELS`` (default: ``models.toml`` beside this module). The gateway validates
requests against it; the generation worker runs them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

ProviderName = Literal["local", "openai", "stability", "replicate", "gemini"]


class ModelSpec(BaseModel):
    name: str
    provider: ProviderName
    base_url: str | None = None
    api_key_env: str | None = None
    model: str | None = None
    timeout_s: float = Field(120, gt=0)
    fallbacks: list[str] = Field(default_factory=list)
    # What the model makes; None = its provider's default (local: image and video; others: image).
    kinds: list[Literal["image", "video"]] | None = None
    # Provider-specific request settings (e.g. OpenAI quality, Stability endpoint, Replicate version).
    options: dict[str, Any] = Field(default_factory=dict)
    # What one output costs upstream, reported as provider_cost_usd in generation.completed.
    cost_usd_per_output: float | None = Field(None, ge=0)

    def supports(self, kind: str) -> bool:
        if self.kinds is not None:
            return kind in self.kinds
        return kind in (("image", "video") if self.provider == "local" else ("image",))


def load_catalog(path: Path) -> dict[str, ModelSpec]:
    raw = tomllib.loads(path.read_text())
    return {name: ModelSpec(name=name, **spec) for name, spec in raw.get("models", {}).items()}


DEFAULT_MODELS_FILE = Path(__file__).parent / "models.toml"
DEFAULT_MODEL = "local"
