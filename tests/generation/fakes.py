"""Local fake servers speaking the OpenAI Images, Stability v2beta, Replicate and Gemini formats.

Each answers on its own loopback port (uvicorn in a background thread). What a call does is
scripted per prompt: ``fakes.script("my prompt", ["429", "ok"])`` makes the first call with that
prompt rate-limited and the second succeed (the last step repeats). Every call is recorded
(path, headers, body) for assertions on the request format.

Steps: ``ok``, ``429``, ``500``, ``503``, ``timeout`` (answers after ``SLOW_S``), ``malformed``
(a 200 that breaks the format), ``refuse`` (the API's content refusal), ``401``; Replicate also
``slow`` (a prediction that stays ``processing`` until canceled).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genimage_devstack.processes import free_port
from tests.polling import eventually

SLOW_S = 3.0


def fake_png(prompt: str, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small picture whose colour depends on the prompt (providers resize it)."""
    digest = uuid.uuid5(uuid.NAMESPACE_OID, prompt).bytes
    buf = io.BytesIO()
    Image.new("RGB", size, (digest[0], digest[1], digest[2])).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Call:
    provider: str
    path: str
    headers: dict[str, str]
    body: Any
    prompt: str | None
    at: float = field(default_factory=time.monotonic)


class Fakes:
    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.counters: dict[tuple[str, str], int] = defaultdict(int)
        self.calls: list[Call] = []
        self.predictions: dict[str, dict[str, Any]] = {}
        self.canceled: set[str] = set()
        self.ports = {name: free_port() for name in ("openai", "stability", "replicate", "gemini")}
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None

    # --- test API -----------------------------------------------------------------------------

    def url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.ports[provider]}"

    def script(self, prompt: str, steps: list[str]) -> str:
        self.scripts[prompt] = steps
        return prompt

    def calls_for(self, prompt: str, provider: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.prompt == prompt and (provider is None or c.provider == provider)]

    def prediction_polled(self, prompt: str) -> bool:
        """Whether the prediction of ``prompt`` was asked for its state (it is under way)."""
        return any(c.path.startswith("/v1/predictions/") for c in self.calls_for(prompt))

    def step(self, provider: str, prompt: str | None) -> str:
        steps = self.scripts.get(prompt or "", ["ok"])
        n = self.counters[(provider, prompt or "")]
        self.counters[(provider, prompt or "")] += 1
        return steps[min(n, len(steps) - 1)]

    async def record(self, provider: str, request: Request, body: Any, prompt: str | None) -> str:
        self.calls.append(Call(provider, request.url.path, dict(request.headers), body, prompt))
        return self.step(provider, prompt)

    # --- servers ------------------------------------------------------------------------------

    def start(self) -> None:
        apps = {
            "openai": Starlette(
                routes=[
                    Route("/v1/images/generations", self.openai_generate, methods=["POST"]),
                    Route("/v1/images/edits", self.openai_edit, methods=["POST"]),
                ]
            ),
            "stability": Starlette(
                routes=[
                    Route("/v2beta/stable-image/generate/{endpoint}", self.stability_generate, methods=["POST"]),
                ]
            ),
            "replicate": Starlette(
                routes=[
                    Route("/v1/models/{owner}/{name}/predictions", self.replicate_create, methods=["POST"]),
                    Route("/v1/predictions/{pid}", self.replicate_get, methods=["GET"]),
                    Route("/v1/predictions/{pid}/cancel", self.replicate_cancel, methods=["POST"]),
                    Route("/files/{pid}/{index}.png", self.replicate_file, methods=["GET"]),
                ]
            ),
            "gemini": Starlette(
                routes=[
                    Route("/v1beta/models/{target:path}", self.gemini_generate, methods=["POST"]),
                ]
            ),
        }
        for name, app in apps.items():
            config = uvicorn.Config(app, host="127.0.0.1", port=self.ports[name], log_level="warning", lifespan="off")
            self._servers.append(uvicorn.Server(config))

        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers))

        self._thread = threading.Thread(target=lambda: asyncio.run(serve_all()), name="fake-providers", daemon=True)
        self._thread.start()
        eventually(lambda: all(s.started for s in self._servers), timeout=10, interval=0.02, what="fakes started")

    def stop(self) -> None:
        for s in self._servers:
            s.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- OpenAI Images API ----------------------------------------------------------------------

    @staticmethod
    def openai_error(status: int, message: str, type_: str, code: str | None, headers: dict | None = None) -> Response:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    async def openai_answer(self, step: str, prompt: str, n: int) -> Response:
        if step == "429":
            return self.openai_error(
                429, "Rate limit reached for images", "requests", "rate_limit_exceeded", {"retry-after": "1"}
            )
        if step in ("500", "503"):
            return self.openai_error(
                int(step), "The server had an error while processing your request.", "server_error", None
            )
        if step == "401":
            return self.openai_error(
                401, "Incorrect API key provided: sk-****.", "invalid_request_error", "invalid_api_key"
            )
        if step == "refuse":
            return self.openai_error(
                400,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        if step == "timeout":
            await asyncio.sleep(SLOW_S)
        if step == "malformed":
            return JSONResponse({"created": int(time.time()), "data": [{"b64_json": "%%% not base64 %%%"}]})
        image = base64.b64encode(fake_png(prompt)).decode()
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [{"b64_json": image, "revised_prompt": prompt} for _ in range(n)],
                "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50},
            }
        )

    async def openai_generate(self, request: Request) -> Response:
        body = await request.json()
        step = await self.record("openai", request, body, body.get("prompt"))
        return await self.openai_answer(step, body.get("prompt", ""), int(body.get("n", 1)))

    async def openai_edit(self, request: Request) -> Response:
        form = await request.form()
        files = [(k, v.filename, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        prompt = fields.get("prompt")
        step = await self.record("openai", request, {"fields": fields, "files": files}, prompt)
        return await self.openai_answer(step, prompt or "", int(fields.get("n", 1)))

    # --- Stability v2beta stable-image ----------------------------------------------------------

    async def stability_generate(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return JSONResponse({"id": "x", "name": "bad_request", "errors": ["multipart/form-data required"]}, 400)
        form = await request.form()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        files = {k: await v.read() for k, v in form.multi_items() if hasattr(v, "read")}
        prompt = fields.get("prompt")
        step = await self.record(
            "stability",
            request,
            {"fields": fields, "files": files, "endpoint": request.path_params["endpoint"]},
            prompt,
        )
        rid = uuid.uuid4().hex
        if step == "429":
            return JSONResponse(
                {
                    "id": rid,
                    "name": "rate_limit_exceeded",
                    "errors": ["You have exceeded the rate limit of 150 requests within a 10 second period"],
                },
                429,
                headers={"retry-after": "1"},
            )
        if step in ("500", "503"):
            return JSONResponse(
                {"id": rid, "name": "internal_error", "errors": ["An unexpected server error"]}, int(step)
            )
        if step == "401":
            return JSONResponse({"id": rid, "name": "unauthorized", "errors": ["authorization: invalid key"]}, 401)
        if step == "refuse":
            return JSONResponse(
                {
                    "id": rid,
                    "name": "content_moderation",
                    "errors": ["Your request was flagged by our content moderation system"],
                },
                403,
            )
        if step == "timeout":
            await asyncio.sleep(SLOW_S)
        if step == "malformed":
            return JSONResponse({"finish_reason": "SUCCESS", "seed": 1})
        if request.headers.get("accept") == "application/json":
            image = base64.b64encode(fake_png(prompt or "")).decode()
            return JSONResponse({"image": image, "finish_reason": "SUCCESS", "seed": int(fields.get("seed", 0))})
        return Response(
            fake_png(prompt or ""),
            media_type="image/png",
            headers={"finish-reason": "SUCCESS", "seed": fields.get("seed", "0")},
        )

    # --- Replicate predictions ------------------------------------------------------------------

    def replicate_prediction(self, pid: str, status: str, *, output: Any = None, error: Any = None) -> dict:
        base = self.url("replicate")
        pred = self.predictions[pid]
        pred.update({"status": status, "output": output, "error": error})
        return {
            "id": pid,
            "model": pred["model"],
            "version": "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637",
            "input": pred["input"],
            "logs": pred.get("logs", ""),
            "output": output,
            "data_removed": False,
            "error": error,
            "status": status,
            "created_at": "2026-01-01T00:00:00.000Z",
            "urls": {
                "get": f"{base}/v1/predictions/{pid}",
                "cancel": f"{base}/v1/predictions/{pid}/cancel",
                "web": f"https://replicate.com/p/{pid}",
            },
            "metrics": {"predict_time": 0.5} if status == "succeeded" else {},
        }

    def replicate_done(self, pid: str) -> dict:
        pred = self.predictions[pid]
        n = int(pred["input"].get("num_outputs", 1))
        files = [f"{self.url('replicate')}/files/{pid}/{i}.png" for i in range(n)]
        return self.replicate_prediction(pid, "succeeded", output=files)

    @staticmethod
    def problem(status: int, title: str, detail: str, headers: dict | None = None) -> Response:
        return JSONResponse({"title": title, "detail": detail, "status": status}, status_code=status, headers=headers)

    async def replicate_create(self, request: Request) -> Response:
        body = await request.json()
        prompt = (body.get("input") or {}).get("prompt")
        step = await self.record("replicate", request, body, prompt)
        if step == "429":
            return self.problem(
                429,
                "Request was throttled.",
                "Request was throttled. Expected available in 1 second.",
                {"retry-after": "1"},
            )
        if step in ("500", "503"):
            return self.problem(int(step), "Internal server error", "Something went wrong")
        if step == "401":
            return self.problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if step == "timeout":
            await asyncio.sleep(SLOW_S)
        pid = uuid.uuid4().hex[:20]
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        self.predictions[pid] = {
            "model": model,
            "input": body.get("input") or {},
            "step": step,
            "polls": 0,
            "prompt": prompt,
        }
        if step == "malformed":
            return JSONResponse({"id": pid, "detail": "no status here"}, status_code=201)
        if step == "refuse":
            pred = self.replicate_prediction(pid, "failed", error="NSFW content detected. Try running it again.")
            return JSONResponse(pred, status_code=201)
        if step in ("poll", "slow"):
            return JSONResponse(self.replicate_prediction(pid, "starting"), status_code=201)
        # Prefer: wait answered synchronously.
        return JSONResponse(self.replicate_done(pid), status_code=201)

    async def replicate_get(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        pred = self.predictions.get(pid)
        if pred is None:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        self.calls.append(Call("replicate", request.url.path, dict(request.headers), None, pred["prompt"]))
        if pid in self.canceled:
            return JSONResponse(self.replicate_prediction(pid, "canceled"))
        pred["polls"] += 1
        if pred["step"] == "slow" or pred["polls"] < 3:
            pred["logs"] = f"Using seed: 1\n {min(99, pred['polls'] * 33)}%|███       | {pred['polls']}/4 [00:01<00:02]"
            return JSONResponse(self.replicate_prediction(pid, "processing"))
        return JSONResponse(self.replicate_done(pid))

    async def replicate_cancel(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        self.canceled.add(pid)
        return JSONResponse(self.replicate_prediction(pid, "canceled"))

    async def replicate_file(self, request: Request) -> Response:
        pred = self.predictions.get(request.path_params["pid"])
        if pred is None:
            return Response(status_code=404)
        return Response(fake_png(f"{pred['prompt']}#{request.path_params['index']}"), media_type="image/png")

    # --- Gemini generateContent -----------------------------------------------------------------

    @staticmethod
    def google_error(code: int, status: str, message: str, details: list | None = None) -> Response:
        error: dict[str, Any] = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        return JSONResponse({"error": error}, status_code=code)

    async def gemini_generate(self, request: Request) -> Response:
        target = request.path_params["target"]
        if not target.endswith(":generateContent"):
            return self.google_error(404, "NOT_FOUND", f"Method not found: {target}")
        if not request.headers.get("x-goog-api-key"):
            return self.google_error(401, "UNAUTHENTICATED", "Method doesn't allow unregistered callers")
        body = await request.json()
        parts = body["contents"][0]["parts"]
        text = next((p["text"] for p in parts if "text" in p), None)
        # Negative prompts travel as an "Avoid:" line after the prompt.
        prompt = text.split("\nAvoid:")[0] if text else None
        step = await self.record("gemini", request, body, prompt)
        if step == "429":
            return self.google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
                ],
            )
        if step in ("500", "503"):
            status = "INTERNAL" if step == "500" else "UNAVAILABLE"
            return self.google_error(int(step), status, "The model is overloaded. Please try again later.")
        if step == "401":
            return self.google_error(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
        if step == "refuse":
            return JSONResponse({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}})
        if step == "timeout":
            await asyncio.sleep(SLOW_S)
        if step == "malformed":
            return JSONResponse(
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": "Here is your image!"}], "role": "model"},
                            "finishReason": "STOP",
                        }
                    ]
                }
            )
        image = base64.b64encode(fake_png(prompt or "")).decode()
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {"text": "Here you go."},
                                {"inlineData": {"mimeType": "image/png", "data": image}},
                            ],
                            "role": "model",
                        },
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1290, "totalTokenCount": 1299},
                "modelVersion": target.split(":")[0],
            }
        )


def catalog_toml(fakes: Fakes, *, timeout_s: float = 1.0) -> str:
    """A catalog with each provider twice: with ``local`` as fallback, and alone."""
    upstream = {
        "openai": ("/v1", "gpt-image-1", ""),
        "stability": ("", "core", ""),
        "replicate": ("/v1", "black-forest-labs/flux-schnell", "options = { poll_interval_s = 0.05 }"),
        "gemini": ("/v1beta", "gemini-2.5-flash-image", ""),
    }
    lines = ['[models.local]\nprovider = "local"\n']
    for provider, (path, model, extra) in upstream.items():
        for suffix, fallbacks in (("", '["local"]'), ("-solo", "[]")):
            lines.append(
                f'[models.{provider}{suffix}]\nprovider = "{provider}"\nbase_url = "{fakes.url(provider)}{path}"\n'
                f'api_key_env = "FAKE_{provider.upper()}_KEY"\nmodel = "{model}"\ntimeout_s = {timeout_s}\n'
                f"fallbacks = {fallbacks}\ncost_usd_per_output = 0.01\n{extra}\n"
            )
    return "\n".join(lines)


KEYS = {f"FAKE_{p.upper()}_KEY": f"test-key-{p}" for p in ("openai", "stability", "replicate", "gemini")}


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
