"""Replicate predictions: create (``POST /models/{owner}/{name}/predictions`` for official
models, ``POST /predictions`` with a ``version``), with ``Prefer: wait`` so fast models answer
at once, then poll ``urls.get`` until ``succeeded`` | ``failed`` | ``canceled``, download the
output files. A canceled job cancels its prediction (``urls.cancel``); ``Cancel-After`` makes
Replicate stop it by itself should this worker vanish. Progress comes from the tqdm bars in
the prediction's ``logs``. Errors are RFC 7807 problem details ``{"title", "detail", "status"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
from typing import Any

import httpx

from ..cancellation import CancelToken
from ..errors import ContentRefused, GenerationError, JobCanceled, ProviderBadResponse
from .base import Progress, RenderedOutput, RenderRequest
from .http import HttpProvider, error_body, json_body, nearest_ratio, remaining

log = logging.getLogger(__name__)

ASPECT_RATIOS = ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21"]
TERMINAL = {"succeeded", "failed", "canceled"}
PERCENT = re.compile(r"(\d{1,3})%\|")
REFUSAL = re.compile(r"nsfw|safety|content (policy|moderation)|flagged", re.IGNORECASE)
MAX_WAIT_S = 60


class ReplicateProvider(HttpProvider):
    name = "replicate"
    default_base_url = "https://api.replicate.com/v1"

    def error_for(self, response: httpx.Response) -> GenerationError:
        status = response.status_code
        body = error_body(response)
        detail = body.get("detail") or body.get("title") or f"HTTP {status}"
        return self.status_error(status, f"{self.model}: {detail}", response.headers)

    def _input(self, request: RenderRequest) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": request.seed,
            "num_outputs": request.n,
            "aspect_ratio": nearest_ratio(request.width, request.height, ASPECT_RATIOS),
            "output_format": "png",
        }
        if request.negative_prompt and self.options.get("negative_prompt", False):
            fields["negative_prompt"] = request.negative_prompt
        if request.input_images:
            field = str(self.options.get("image_field", "image"))
            fields[field] = "data:image/png;base64," + base64.b64encode(request.input_images[0]).decode()
        fields.update(self.options.get("input") or {})
        return fields

    async def generate(
        self, request: RenderRequest, *, progress: Progress, cancel: CancelToken
    ) -> list[RenderedOutput]:
        self.require_images(request)
        self.key()
        await progress(0.0, "queued")
        prediction = await cancel.run(self._create(request))
        try:
            prediction = await cancel.run(self._until_done(prediction, progress))
        except (JobCanceled, asyncio.CancelledError, TimeoutError):
            await self._cancel_upstream(prediction)
            raise
        urls = self._output_urls(prediction)
        if len(urls) < request.n:
            raise ProviderBadResponse(f"{self.model}: {len(urls)} outputs for {request.n} requested")
        outputs = []
        for index, url in enumerate(urls[: request.n]):
            data = await cancel.run(self.fetch_output(url))
            outputs.append(await asyncio.to_thread(self.finish, request, index, data))
        await progress(0.95, "downloading")
        return outputs

    async def _create(self, request: RenderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"input": self._input(request)}
        if version := self.options.get("version"):
            url = f"{self.base_url}/predictions"
            body["version"] = version
        else:
            url = f"{self.base_url}/models/{self.upstream_model}/predictions"
        wait = int(max(1, min(MAX_WAIT_S, self.spec.timeout_s - 1, remaining() - 1)))
        headers = {"prefer": f"wait={wait}", "cancel-after": f"{max(1, math.ceil(remaining()))}s"}
        response = await self.request("POST", url, op="create", json=body, headers=headers)
        return self._prediction(response)

    def _prediction(self, response: httpx.Response) -> dict[str, Any]:
        body = json_body(response, f"{self.model}: prediction")
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise ProviderBadResponse(f"{self.model}: prediction without a status")
        return body

    async def _until_done(self, prediction: dict[str, Any], progress: Progress) -> dict[str, Any]:
        delay = float(self.options.get("poll_interval_s", 0.5))
        while prediction["status"] not in TERMINAL:
            url = (prediction.get("urls") or {}).get("get")
            if not isinstance(url, str):
                raise ProviderBadResponse(f"{self.model}: prediction without urls.get")
            if (fraction := self._log_progress(prediction)) is not None:
                await progress(fraction * 0.9, "processing")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 3.0)
            prediction = self._prediction(await self.request("GET", url, op="poll"))
        status = prediction["status"]
        if status == "failed":
            error = str(prediction.get("error") or "prediction failed")
            if REFUSAL.search(error):
                raise ContentRefused(f"{self.model}: {error[:300]}")
            raise ProviderBadResponse(f"{self.model}: prediction failed: {error[:300]}")
        if status == "canceled":
            raise ProviderBadResponse(f"{self.model}: prediction was canceled upstream")
        return prediction

    @staticmethod
    def _log_progress(prediction: dict[str, Any]) -> float | None:
        logs = prediction.get("logs")
        if not isinstance(logs, str):
            return None
        found = PERCENT.findall(logs)
        return min(int(found[-1]), 100) / 100 if found else None

    def _output_urls(self, prediction: dict[str, Any]) -> list[str]:
        output = prediction.get("output")
        if isinstance(output, str):
            output = [output]
        if not isinstance(output, list) or not output or not all(isinstance(u, str) for u in output):
            raise ProviderBadResponse(f"{self.model}: prediction succeeded without output files")
        return output

    async def _cancel_upstream(self, prediction: dict[str, Any]) -> None:
        """Best effort, shielded from the cancellation that got us here."""
        url = (prediction.get("urls") or {}).get("cancel")
        if not isinstance(url, str) or prediction.get("status") in TERMINAL:
            return

        async def cancel() -> None:
            with contextlib.suppress(Exception):
                await self._client.post(url, headers=self.auth_headers(), timeout=5)

        with contextlib.suppress(Exception):
            await asyncio.shield(cancel())
        log.info("replicate prediction canceled", extra={"model": self.model})
