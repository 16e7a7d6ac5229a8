"""Providers built from the model catalog: one instance per catalog model."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from genimage_common.catalog import DEFAULT_MODEL, ModelSpec

from .base import Provider
from .gemini import GeminiProvider
from .http import HttpProvider, RetryPolicy
from .local import LocalProvider
from .openai import OpenAIProvider
from .replicate import ReplicateProvider
from .stability import StabilityProvider

log = logging.getLogger(__name__)

REMOTE: dict[str, type[HttpProvider]] = {
    "openai": OpenAIProvider,
    "stability": StabilityProvider,
    "replicate": ReplicateProvider,
    "gemini": GeminiProvider,
}


class CatalogError(ValueError):
    pass


def validate_catalog(catalog: Mapping[str, ModelSpec]) -> None:
    """Refuse to start on a catalog the worker could not honour."""
    if DEFAULT_MODEL not in catalog:
        raise CatalogError(f"the default model {DEFAULT_MODEL!r} is missing from the catalog")
    for name, spec in catalog.items():
        for fallback in spec.fallbacks:
            if fallback not in catalog:
                raise CatalogError(f"model {name!r} falls back to unknown model {fallback!r}")
            if fallback == name:
                raise CatalogError(f"model {name!r} falls back to itself")


def build_providers(
    catalog: Mapping[str, ModelSpec], *, policy: RetryPolicy, environ: Mapping[str, str], max_input_pixels: int
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, spec in catalog.items():
        if spec.provider == "local":
            providers[name] = LocalProvider(name, max_input_pixels=max_input_pixels)
            continue
        api_key = environ.get(spec.api_key_env) if spec.api_key_env else None
        if not api_key:
            # Not fatal: the model fails with provider_auth and its fallbacks take over.
            log.warning("model has no API key", extra={"model": name, "key_variable": spec.api_key_env})
        providers[name] = REMOTE[spec.provider](spec, api_key=api_key, policy=policy, max_input_pixels=max_input_pixels)
    return providers
