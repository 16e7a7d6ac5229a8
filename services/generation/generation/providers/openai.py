"""OpenAI Images API (and compatible ``base_url``s): ``POST /images/generations`` with JSON, or
``POST /images/edits`` (multipart) when the request has input images.

Responses are ``{"created", "data": [{"b64_json" | "url", "revised_prompt"?}]}``; errors are
``{"error": {"message", "type", "param", "code"}}`` — a content-policy refusal is a 400 with code
``content_policy_violation`` (DALL·E) or ``moderation_blocked`` (gpt-image), and a 429 with code
``insufficient_quota`` is a billing problem, not a rate limit.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

from ..cancellation import CancelToken
from ..errors import ContentRefused, GenerationError, ProviderAuth, ProviderBadResponse
from .base import Progress, RenderedOutput, RenderRequest
from .http import HttpProvider, decode_b64, error_body, json_body

SIZES = {
    "dall-e-2": ["256x256", "512x512", "1024x1024"],
    "dall-e-3": ["1024x1024", "1792x1024", "1024x1792"],
}
GPT_IMAGE_SIZES = ["1024x1024", "1536x1024", "1024x1536"]
# Outputs per call: DALL·E 3 makes one image per request.
MAX_PER_CALL = {"dall-e-3": 1}
REFUSALS = {"content_policy_violation", "moderation_blocked"}


def pick_size(width: int, height: int, sizes: list[str]) -> str:
    """The supported size closest in aspect ratio, then in area."""

    def distance(size: str) -> tuple[float, float]:
        w, h = (int(v) for v in size.split("x"))
        return abs(math.log(w / h) - math.log(width / height)), abs(math.log(w * h) - math.log(width * height))

    return min(sizes, key=distance)


class OpenAIProvider(HttpProvider):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"

    @property
    def legacy(self) -> bool:
        """DALL·E models take ``response_format``; gpt-image models always answer base64."""
        return self.upstream_model.startswith("dall-e")

    def sizes(self) -> list[str]:
        return list(self.options.get("sizes") or SIZES.get(self.upstream_model, GPT_IMAGE_SIZES))

    def error_for(self, response: httpx.Response) -> GenerationError:
        status = response.status_code
        err = error_body(response, "error")
        message = f"{self.model}: {err.get('message') or f'HTTP {status}'}"
        code = err.get("code") or ""
        if code in REFUSALS:
            return ContentRefused(message)
        if status == 429 and code == "insufficient_quota":
            return ProviderAuth(message)
        return self.status_error(status, message, response.headers)

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]:
        self.require_images(request)
        self.key()
        size = pick_size(request.width, request.height, self.sizes())
        per_call = int(self.options.get("max_per_call") or MAX_PER_CALL.get(self.upstream_model, 10))
        images: list[bytes] = []
        await progress(0.0, "generating")
        while len(images) < request.n:
            count = min(per_call, request.n - len(images))
            response = await cancel.run(self._call(request, size=size, count=count))
            images.extend(await self._images(response, count))
            await progress(len(images) / request.n * 0.9, "generating")
        return [await asyncio.to_thread(self.finish, request, i, data) for i, data in enumerate(images)]

    async def _call(self, request: RenderRequest, *, size: str, count: int) -> httpx.Response:
        fields: dict[str, Any] = {"model": self.upstream_model, "prompt": request.prompt, "n": count, "size": size}
        if self.legacy:
            fields["response_format"] = "b64_json"
        fields.update(self.options.get("params") or {})
        if not request.input_images:
            return await self.request("POST", f"{self.base_url}/images/generations", op="generate", json=fields)
        # Edits are multipart: the images as files, the other fields as form fields.
        name = "image" if len(request.input_images) == 1 else "image[]"
        files = [(name, (f"input-{i}.png", data, "image/png")) for i, data in enumerate(request.input_images)]
        data = {k: str(v) for k, v in fields.items()}
        return await self.request("POST", f"{self.base_url}/images/edits", op="edit", data=data, files=files)

    async def _images(self, response: httpx.Response, expected: int) -> list[bytes]:
        body = json_body(response, f"{self.model}: images response")
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) != expected:
            raise ProviderBadResponse(f"{self.model}: expected {expected} images in 'data'")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise ProviderBadResponse(f"{self.model}: malformed image entry")
            if item.get("b64_json"):
                out.append(decode_b64(item["b64_json"], f"{self.model}: b64_json"))
            elif isinstance(item.get("url"), str):
                out.append(await self.fetch_output(item["url"]))
            else:
                raise ProviderBadResponse(f"{self.model}: image entry without b64_json or url")
        return out
