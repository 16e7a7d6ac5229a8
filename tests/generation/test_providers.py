"""Each remote provider against a fake server speaking its API: the request format, success,
rate limits then success, 5xx exhaustion then fallback, timeouts, malformed answers, refusals.
The chain (retries, fallbacks, deadline) is the worker's own code, run in this process."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from generation.cancellation import CancelToken
from generation.chain import ChainResult, ProviderChain
from generation.errors import (
    ContentRefused,
    DeadlineExceeded,
    InvalidInput,
    JobCanceled,
    ProviderAuth,
    ProviderBadResponse,
    ProviderTimeout,
)
from generation.providers.base import Provider, RenderRequest
from generation.providers.http import RetryPolicy
from generation.providers.registry import build_providers
from genimage_common.catalog import load_catalog
from tests.generation.fakes import KEYS, Fakes
from tests.polling import eventually_async

PROVIDERS = ["openai", "stability", "replicate", "gemini"]
ATTEMPTS = 3


@pytest.fixture(scope="module")
async def chain(models_file: Path) -> AsyncIterator[ProviderChain]:
    catalog = load_catalog(models_file)
    providers = build_providers(
        catalog, policy=RetryPolicy(attempts=ATTEMPTS, base_s=0.05, max_s=0.2), environ=KEYS, max_input_pixels=10**8
    )
    yield ProviderChain(catalog, providers)
    for provider in providers.values():
        await provider.aclose()


def req(prompt: str, **fields: object) -> RenderRequest:
    base: dict = {
        "kind": "image",
        "prompt": prompt,
        "negative_prompt": None,
        "width": 768,
        "height": 512,
        "n": 1,
        "seed": 7,
    }
    return RenderRequest(**{**base, **fields})  # type: ignore[arg-type]


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


async def run(
    chain: ProviderChain,
    model: str,
    request: RenderRequest,
    *,
    deadline_s: float = 30,
    cancel: CancelToken | None = None,
    stages: list[str] | None = None,
) -> ChainResult:
    started: list[str] = []

    async def progress(value: float, stage: str) -> None:
        if stages is not None:
            stages.append(stage)

    async def on_start(provider: Provider) -> None:
        started.append(provider.model)

    return await chain.run(
        model,
        request,
        deadline=time.monotonic() + deadline_s,
        progress=progress,
        cancel=cancel or CancelToken(),
        on_start=on_start,
    )


def decoded(result: ChainResult) -> list[Image.Image]:
    return [Image.open(io.BytesIO(o.data)) for o in result.outputs]


async def test_openai_request_format_and_success(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("openai ok"), ["ok"])
    result = await run(chain, "openai-solo", req(prompt, n=2))
    (call,) = fakes.calls_for(prompt)
    assert call.path == "/v1/images/generations"
    assert call.headers["authorization"] == "Bearer test-key-openai"
    assert call.body == {"model": "gpt-image-1", "prompt": prompt, "n": 2, "size": "1536x1024"}
    assert (result.provider, result.model, result.failures) == ("openai", "openai-solo", [])
    assert result.provider_cost_usd == 0.02
    images = decoded(result)
    assert [i.size for i in images] == [(768, 512)] * 2
    assert json.loads(images[0].text["genimage"])["provider"] == "openai"


async def test_stability_request_format_and_success(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("stability ok"), ["ok"])
    result = await run(chain, "stability-solo", req(prompt, n=2, negative_prompt="blurry", output_format="webp"))
    calls = fakes.calls_for(prompt)
    assert len(calls) == 2  # one image per call
    first = calls[0]
    assert first.path == "/v2beta/stable-image/generate/core"
    assert first.headers["authorization"] == "Bearer test-key-stability"
    assert first.headers["accept"] == "application/json"
    assert first.headers["content-type"].startswith("multipart/form-data")
    assert first.body["fields"] == {
        "prompt": prompt,
        "negative_prompt": "blurry",
        "aspect_ratio": "3:2",
        "seed": "7",
        "output_format": "png",
    }
    assert calls[1].body["fields"]["seed"] == "8"
    assert [(i.format, i.size) for i in decoded(result)] == [("WEBP", (768, 512))] * 2


async def test_replicate_request_format_and_success(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("replicate ok"), ["ok"])
    result = await run(chain, "replicate-solo", req(prompt, n=2))
    calls = fakes.calls_for(prompt, "replicate")
    create = calls[0]
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == "Bearer test-key-replicate"
    assert create.headers["prefer"].startswith("wait=")
    assert create.headers["cancel-after"].endswith("s")
    assert create.body == {
        "input": {"prompt": prompt, "seed": 7, "num_outputs": 2, "aspect_ratio": "3:2", "output_format": "png"}
    }
    assert len(decoded(result)) == 2 and result.provider == "replicate"
    # The two files differ (each output downloaded, not one twice).
    assert result.outputs[0].data != result.outputs[1].data


async def test_replicate_polls_until_done_with_progress_from_logs(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("replicate poll"), ["poll"])
    stages: list[str] = []
    result = await run(chain, "replicate-solo", req(prompt), stages=stages)
    polls = [c for c in fakes.calls_for(prompt) if c.path.startswith("/v1/predictions/")]
    assert len(polls) >= 3 and all(c.headers["authorization"] == "Bearer test-key-replicate" for c in polls)
    assert "processing" in stages and result.provider == "replicate"


async def test_replicate_cancel_cancels_the_prediction(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("replicate slow"), ["slow"])
    token = CancelToken()
    task = asyncio.ensure_future(run(chain, "replicate-solo", req(prompt), cancel=token))

    await eventually_async(lambda: fakes.prediction_polled(prompt), timeout=10, what="prediction polled")
    token.cancel()
    with pytest.raises(JobCanceled):
        await task
    (pid,) = {p for p, pred in fakes.predictions.items() if pred["prompt"] == prompt}
    assert pid in fakes.canceled


async def test_gemini_request_format_and_success(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("gemini ok"), ["ok"])
    result = await run(chain, "gemini-solo", req(prompt, negative_prompt="text"))
    (call,) = fakes.calls_for(prompt)
    assert call.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert call.headers["x-goog-api-key"] == "test-key-gemini"
    assert "authorization" not in call.headers
    assert call.body["contents"] == [{"role": "user", "parts": [{"text": f"{prompt}\nAvoid: text"}]}]
    config = call.body["generationConfig"]
    assert "IMAGE" in config["responseModalities"] and config["imageConfig"] == {"aspectRatio": "3:2"}
    assert result.provider == "gemini" and decoded(result)[0].size == (768, 512)


def inline(png: bytes) -> str:
    return base64.b64encode(png).decode()


async def test_image_inputs_reach_each_api(chain: ProviderChain, fakes: Fakes) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(buf, format="PNG")
    upload = buf.getvalue()
    prompts = {p: fakes.script(unique(f"{p} input"), ["ok"]) for p in PROVIDERS}
    results = {p: await run(chain, p, req(prompts[p], input_images=[upload])) for p in PROVIDERS}

    (edit,) = fakes.calls_for(prompts["openai"])
    assert edit.path == "/v1/images/edits" and edit.headers["content-type"].startswith("multipart/form-data")
    assert (
        edit.body["files"] == [("image", "input-0.png", upload)] and edit.body["fields"]["prompt"] == prompts["openai"]
    )
    (create, *_) = fakes.calls_for(prompts["replicate"])
    assert create.body["input"]["image"] == "data:image/png;base64," + inline(upload)
    (gen,) = fakes.calls_for(prompts["gemini"])
    assert gen.body["contents"][0]["parts"][1] == {"inline_data": {"mime_type": "image/png", "data": inline(upload)}}
    # stable-image core takes no input image: invalid for that model, so its fallback serves it.
    assert fakes.calls_for(prompts["stability"]) == []
    assert results["stability"].provider == "local" and results["stability"].failures == [
        ("stability", "invalid_input")
    ]
    assert {results[p].provider for p in ("openai", "replicate", "gemini")} == {"openai", "replicate", "gemini"}


async def test_rate_limited_then_success_honours_retry_after(chain: ProviderChain, fakes: Fakes) -> None:
    prompts = {p: fakes.script(unique(f"{p} 429"), ["429", "ok"]) for p in PROVIDERS}
    results = await asyncio.gather(*(run(chain, f"{p}-solo", req(prompts[p])) for p in PROVIDERS))
    for p, result in zip(PROVIDERS, results, strict=True):
        first, second = fakes.calls_for(prompts[p])[:2]
        assert result.provider == p and result.failures == []
        # Each API asked for 1 s (Retry-After, or Gemini's RetryInfo.retryDelay): we waited that long.
        assert second.at - first.at >= 0.95, p


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_server_errors_exhaust_retries_then_fall_back(chain: ProviderChain, fakes: Fakes, provider: str) -> None:
    prompt = fakes.script(unique(f"{provider} 503"), ["503"])
    result = await run(chain, provider, req(prompt, n=2))
    assert len(fakes.calls_for(prompt)) == ATTEMPTS
    assert result.provider == "local" and result.model == "local"
    assert result.failures == [(provider, "provider_unavailable")]
    assert len(result.outputs) == 2


async def test_timeouts_are_retried_then_reported(chain: ProviderChain, fakes: Fakes) -> None:
    prompts = {p: fakes.script(unique(f"{p} timeout"), ["timeout"]) for p in PROVIDERS}
    outcomes = await asyncio.gather(
        *(run(chain, f"{p}-solo", req(prompts[p])) for p in PROVIDERS), return_exceptions=True
    )
    for p, outcome in zip(PROVIDERS, outcomes, strict=True):
        assert isinstance(outcome, ProviderTimeout), (p, outcome)
        assert outcome.code == "provider_timeout" and outcome.retryable
        assert len(fakes.calls_for(prompts[p])) == ATTEMPTS, p


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_responses_are_provider_errors(chain: ProviderChain, fakes: Fakes, provider: str) -> None:
    prompt = fakes.script(unique(f"{provider} malformed"), ["malformed"])
    with pytest.raises(ProviderBadResponse) as caught:
        await run(chain, f"{provider}-solo", req(prompt))
    assert caught.value.code == "provider_error"
    assert len([c for c in fakes.calls_for(prompt) if c.body is not None]) == 1  # not retried
    # With a fallback, the next model serves the request.
    prompt = fakes.script(unique(f"{provider} malformed fb"), ["malformed"])
    result = await run(chain, provider, req(prompt))
    assert result.provider == "local" and result.failures == [(provider, "provider_error")]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refusals_do_not_fall_back(chain: ProviderChain, fakes: Fakes, provider: str) -> None:
    prompt = fakes.script(unique(f"{provider} refuse"), ["refuse"])
    with pytest.raises(ContentRefused) as caught:
        await run(chain, provider, req(prompt))  # has a fallback, which must not be used
    assert caught.value.code == "content_refused" and not caught.value.retryable


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rejected_keys_are_not_retried(chain: ProviderChain, fakes: Fakes, provider: str) -> None:
    prompt = fakes.script(unique(f"{provider} auth"), ["401"])
    result = await run(chain, provider, req(prompt))
    assert len(fakes.calls_for(prompt)) == 1
    assert result.provider == "local" and result.failures == [(provider, "provider_auth")]


async def test_missing_key_fails_without_calling(models_file: Path, fakes: Fakes) -> None:
    catalog = load_catalog(models_file)
    providers = build_providers(catalog, policy=RetryPolicy(), environ={}, max_input_pixels=10**8)
    try:
        prompt = unique("no key")
        with pytest.raises(ProviderAuth):
            await run(ProviderChain(catalog, providers), "gemini-solo", req(prompt))
        assert fakes.calls_for(prompt) == []
    finally:
        for provider in providers.values():
            await provider.aclose()


async def test_the_deadline_cuts_retries_short(chain: ProviderChain, fakes: Fakes) -> None:
    prompt = fakes.script(unique("deadline"), ["timeout"])
    with pytest.raises((DeadlineExceeded, ProviderTimeout)):
        await run(chain, "openai-solo", req(prompt), deadline_s=1.3)
    # A call times out after 1 s, the next one is cut at the deadline: the attempts are not all spent.
    assert 1 <= len(fakes.calls_for(prompt)) < ATTEMPTS


async def test_remote_models_make_images_only(chain: ProviderChain) -> None:
    with pytest.raises(InvalidInput) as caught:
        await run(chain, "openai", req("a clip", kind="video", width=1280, height=720, duration_s=2))
    assert caught.value.code == "invalid_input" and "does not make videos" in caught.value.message
    assert chain.models_for("openai", "video") == ["local"]
    assert chain.models_for("openai", "image") == ["openai", "local"]
