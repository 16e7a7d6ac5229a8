"""A request for a kind its model cannot make is refused before any credit is reserved."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from gateway import generations
from gateway.schemas.generations import GenerationCreate
from genimage_common.catalog import ModelSpec
from genimage_common.errors import ValidationFailed

CATALOG = {
    "local": ModelSpec(name="local", provider="local"),
    "dall-e-3": ModelSpec(name="dall-e-3", provider="openai", api_key_env="OPENAI_API_KEY"),
}


async def test_an_image_only_model_refuses_videos() -> None:
    # Nothing but the catalog is reachable: getting past validation would fail on the missing broker.
    services = SimpleNamespace(catalog=CATALOG)
    body = GenerationCreate(kind="video", prompt="waves", model="dall-e-3")
    with pytest.raises(ValidationFailed, match="does not make videos"):
        await generations.create(services, None, user_id=uuid.uuid4(), body=body, idempotency_key=None)  # type: ignore[arg-type]


async def test_unknown_models_are_refused() -> None:
    services = SimpleNamespace(catalog=CATALOG)
    body = GenerationCreate(prompt="x", model="no-such-model")
    with pytest.raises(ValidationFailed, match="unknown model"):
        await generations.create(services, None, user_id=uuid.uuid4(), body=body, idempotency_key=None)  # type: ignore[arg-type]


def test_local_makes_both_kinds_and_remote_models_images() -> None:
    assert CATALOG["local"].supports("video") and CATALOG["local"].supports("image")
    assert CATALOG["dall-e-3"].supports("image") and not CATALOG["dall-e-3"].supports("video")
