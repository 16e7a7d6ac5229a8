"""Google Gemini image models: ``POST /models/{model}:generateContent`` with the key in
``x-goog-api-key``, the prompt and input images as ``parts`` (``inline_data``), and
``generationConfig.responseModalities`` including ``IMAGE``.

The answer's ``candidates[0].content.parts`` holds ``inlineData {mimeType, data}`` images (and
maybe text). A refusal is ``promptFeedback.blockReason`` or a ``finishReason`` such as ``SAFETY``
/ ``IMAGE_SAFETY`` / ``PROHIBITED_CONTENT``. Errors are ``{"error": {"code", "message",
"status", "details"}}``; a 429 ``RESOURCE_EXHAUSTED`` may carry a ``RetryInfo.retryDelay``.
One image per call.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import httpx

from ..cancellation import CancelToken
from ..errors import ContentRefused, GenerationError, ProviderAuth, ProviderBadResponse
from .base import Progress, RenderedOutput, RenderRequest
from .http import HttpProvider, decode_b64, error_body, json_body, nearest_ratio

ASPECT_RATIOS = ["21:9", "16:9", "4:3", "3:2", "5:4", "1:1", "4:5", "2:3", "3:4", "9:16"]
REFUSAL_REASONS = {
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
}
DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiProvider(HttpProvider):
    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.key()}

    def error_for(self, response: httpx.Response) -> GenerationError:
        status = response.status_code
        err = error_body(response, "error")
        message = f"{self.model}: {err.get('status') or status}: {err.get('message') or f'HTTP {status}'}"
        if err.get("status") == "FAILED_PRECONDITION":
            # E.g. billing not enabled or the API unavailable in the region: configuration.
            return ProviderAuth(message)
        error = self.status_error(status, message, response.headers)
        for detail in err.get("details") or []:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
                match = DURATION.match(str(detail.get("retryDelay", "")))
                if match and error.retry_after is None:
                    error.retry_after = float(match.group(1))
        return error

    def _body(self, request: RenderRequest, index: int) -> dict[str, Any]:
        text = request.prompt
        if request.negative_prompt:
            text += f"\nAvoid: {request.negative_prompt}"
        parts: list[dict[str, Any]] = [{"text": text}]
        parts.extend(
            {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(data).decode()}}
            for data in request.input_images
        )
        config: dict[str, Any] = {
            "responseModalities": ["TEXT", "IMAGE"],
            "seed": (request.seed + index) % 2**31,
        }
        if not request.input_images:
            config["imageConfig"] = {"aspectRatio": nearest_ratio(request.width, request.height, ASPECT_RATIOS)}
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]:
        self.require_images(request)
        self.key()
        outputs: list[RenderedOutput] = []
        url = f"{self.base_url}/models/{self.upstream_model}:generateContent"
        await progress(0.0, "generating")
        for index in range(request.n):
            response = await cancel.run(
                self.request("POST", url, op="generateContent", json=self._body(request, index))
            )
            data = self._image(response)
            outputs.append(await asyncio.to_thread(self.finish, request, index, data))
            await progress((index + 1) / request.n * 0.95, "generating")
        return outputs

    def _image(self, response: httpx.Response) -> bytes:
        body = json_body(response, f"{self.model}: generateContent response")
        if not isinstance(body, dict):
            raise ProviderBadResponse(f"{self.model}: response is not an object")
        feedback = body.get("promptFeedback") or {}
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise ContentRefused(f"{self.model}: prompt blocked ({feedback['blockReason']})")
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            raise ProviderBadResponse(f"{self.model}: no candidates")
        candidate = candidates[0]
        if candidate.get("finishReason") in REFUSAL_REASONS:
            raise ContentRefused(f"{self.model}: output blocked ({candidate['finishReason']})")
        parts = (candidate.get("content") or {}).get("parts")
        if not isinstance(parts, list):
            raise ProviderBadResponse(f"{self.model}: candidate without content parts")
        for part in parts:
            inline = part.get("inlineData") or part.get("inline_data") if isinstance(part, dict) else None
            if isinstance(inline, dict) and str(inline.get("mimeType") or inline.get("mime_type", "")).startswith(
                "image/"
            ):
                return decode_b64(inline.get("data"), f"{self.model}: inlineData")
        raise ProviderBadResponse(
            f"{self.model}: no image in the response (finishReason {candidate.get('finishReason')})"
        )
