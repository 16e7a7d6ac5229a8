"""Stability AI Stable Image (v2beta): ``POST /v2beta/stable-image/generate/{core|ultra|sd3}``.

Requests are always ``multipart/form-data`` (also without files); with
``Accept: application/json`` the answer is ``{"image": <base64>, "finish_reason":
"SUCCESS" | "CONTENT_FILTERED", "seed"}``. Errors are ``{"id", "name", "errors": [...]}``; a 403
named ``content_moderation`` is a refusal. One image per call.
"""

from __future__ import annotations

import asyncio

import httpx

from ..cancellation import CancelToken
from ..errors import ContentRefused, GenerationError, InvalidInput, ProviderBadResponse
from .base import Progress, RenderedOutput, RenderRequest
from .http import HttpProvider, decode_b64, error_body, json_body, nearest_ratio

ASPECT_RATIOS = ["21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"]
# Endpoints that accept an input image, and how.
IMAGE_TO_IMAGE = {"ultra", "sd3"}
MAX_SEED = 4294967294


class StabilityProvider(HttpProvider):
    name = "stability"
    default_base_url = "https://api.stability.ai"

    @property
    def endpoint(self) -> str:
        return str(self.options.get("endpoint") or ("sd3" if self.upstream_model.startswith("sd3") else "core"))

    def error_for(self, response: httpx.Response) -> GenerationError:
        status = response.status_code
        body = error_body(response)
        name = str(body.get("name") or "")
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        message = f"{self.model}: {name or f'HTTP {status}'}: {'; '.join(str(e) for e in errors)[:300]}"
        if name == "content_moderation":
            return ContentRefused(message)
        return self.status_error(status, message, response.headers)

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]:
        self.require_images(request)
        self.key()
        if request.input_images and self.endpoint not in IMAGE_TO_IMAGE:
            raise InvalidInput(f"{self.model}: stable-image {self.endpoint} takes no input image")
        outputs: list[RenderedOutput] = []
        await progress(0.0, "generating")
        for index in range(request.n):
            response = await cancel.run(self._call(request, index))
            data = self._image(response)
            outputs.append(await asyncio.to_thread(self.finish, request, index, data))
            await progress((index + 1) / request.n * 0.95, "generating")
        return outputs

    async def _call(self, request: RenderRequest, index: int) -> httpx.Response:
        fields: dict[str, str] = {
            "prompt": request.prompt,
            "output_format": "png",
            "seed": str((request.seed + index) % MAX_SEED),
        }
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        if self.endpoint == "sd3":
            fields["model"] = self.upstream_model
        if style := self.options.get("style_preset"):
            fields["style_preset"] = str(style)
        files: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = []
        if request.input_images:
            files.append(("image", ("input.png", request.input_images[0], "image/png")))
            fields["strength"] = str(self.options.get("strength", 0.6))
            if self.endpoint == "sd3":
                fields["mode"] = "image-to-image"
        else:
            # The aspect ratio is only allowed without an input image (the image sets it).
            fields["aspect_ratio"] = nearest_ratio(request.width, request.height, ASPECT_RATIOS)
        files.extend((k, (None, v, None)) for k, v in fields.items())
        return await self.request(
            "POST",
            f"{self.base_url}/v2beta/stable-image/generate/{self.endpoint}",
            op="generate",
            files=files,
            headers={"accept": "application/json"},
        )

    def _image(self, response: httpx.Response) -> bytes:
        body = json_body(response, f"{self.model}: generate response")
        if not isinstance(body, dict):
            raise ProviderBadResponse(f"{self.model}: response is not an object")
        if body.get("finish_reason") == "CONTENT_FILTERED":
            raise ContentRefused(f"{self.model}: the output was filtered by content moderation")
        if body.get("finish_reason") not in (None, "SUCCESS"):
            raise ProviderBadResponse(f"{self.model}: finish_reason {body.get('finish_reason')!r}")
        return decode_b64(body.get("image"), f"{self.model}: image")
