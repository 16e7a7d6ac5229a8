"""The environment variables a service's settings read, and loading them in a clean process."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

SETTINGS = {
    "gateway": ("gateway.settings", "GatewaySettings"),
    "billing": ("billing.settings", "BillingSettings"),
    "generation": ("generation.settings", "GenerationSettings"),
    "gallery": ("gallery.settings", "GallerySettings"),
}


def settings_class(service: str) -> type[BaseSettings]:
    module, name = SETTINGS[service]
    return getattr(importlib.import_module(module), name)


def env_name(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{cls.model_config.get('env_prefix') or ''}{field}".upper()


def secret_variables(service: str) -> set[str]:
    """Variables of the settings that production refuses to leave at their development default."""
    cls = settings_class(service)
    return {env_name(cls, field) for field in getattr(cls, "dev_secrets", {})}


def load_settings(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Instantiate the service's settings in a process that sees ``env`` and nothing else of ours."""
    module, name = SETTINGS[service]
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run(
        [sys.executable, "-c", f"from {module} import {name}; {name}()"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
