"""The ``local`` provider's render speed, and what the worker adds around it.

Same run, same prompts and sizes (256², 512², 1024², PNG):

- ``render``: the bare renderer in this process (scene + encode), one image at a time:
  images/s and p50/p99 per image.
- ``store``: the storage step alone, in this process against the same S3: WebP thumbnail and
  the two uploads of one output.
- ``worker``: the generation worker as a process (concurrency 1) on its own NATS and S3, one
  job at a time: ``end_to_end`` is publish of ``generation.requested`` → ``completed`` received;
  ``run`` is the worker's own ``timings.run_ms`` (started → completed: render, thumbnail,
  uploads, manifest); ``overhead_p50_ms`` is end_to_end p50 minus render p50 (consume, state checks,
  events, storage).
- ``throughput``: a burst of 512² jobs on a worker with concurrency 2: images/s through the
  whole path.

Run: ``.venv/bin/python bench/generation.py``
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# ``generation`` package: the repository root takes its place.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if p and Path(p).resolve() != ROOT / "bench")]

from bench.harness import infrastructure, summary_ms, write_results  # noqa: E402
from generation.cancellation import CancelToken  # noqa: E402
from generation.outputs import store_output  # noqa: E402
from generation.providers.base import RenderedOutput, RenderRequest  # noqa: E402
from generation.providers.local import LocalProvider  # noqa: E402
from genimage_common.events import GenerationRequested, make_event, parse_event, utcnow  # noqa: E402
from genimage_common.ids import new_id, transition_event_id  # noqa: E402
from genimage_common.settings import CommonSettings  # noqa: E402
from genimage_common.storage import ObjectStore  # noqa: E402
from genimage_devstack.processes import free_port  # noqa: E402
from genimage_devstack.stack import ServiceProcess  # noqa: E402

SIZES = {256: 60, 512: 30, 1024: 12}
PROMPTS = [
    "a lighthouse on a cliff at sunset",
    "city skyline at night, neon cyberpunk",
    "snowy mountains at dawn, watercolor",
    "green forest by a lake",
    "quantum kittens dreaming",
]
BURST = 40


def request(size: int, i: int) -> RenderRequest:
    return RenderRequest(
        kind="image", prompt=PROMPTS[i % len(PROMPTS)], negative_prompt=None, width=size, height=size, n=1, seed=i
    )


async def bare_store(endpoints: Any) -> dict[str, Any]:
    """Component baseline: storing one output (thumbnail + original and thumbnail uploads)."""
    settings = CommonSettings(
        s3_endpoint=endpoints.s3_endpoint, s3_access_key=endpoints.s3_access_key, s3_secret_key=endpoints.s3_secret_key
    )
    store = ObjectStore(settings)
    await store.ensure_bucket()
    provider, token = LocalProvider(), CancelToken()
    results = {}
    for size, count in SIZES.items():
        samples = []
        for i in range(count):
            data = provider.render_image(request(size, i), 0, [], token)
            rendered = RenderedOutput(data, "image/png", size, size)
            t = time.perf_counter()
            await store_output(store, user_id=uuid.uuid4(), generation_id=new_id(), index=0, rendered=rendered)
            samples.append(time.perf_counter() - t)
        results[f"{size}x{size}"] = summary_ms(samples)
    return results


def bare_render() -> dict[str, Any]:
    provider, token = LocalProvider(), CancelToken()
    results = {}
    for size, count in SIZES.items():
        provider.render_image(request(size, 0), 0, [], token)  # warm-up
        samples = []
        for i in range(count):
            t = time.perf_counter()
            provider.render_image(request(size, i), 0, [], token)
            samples.append(time.perf_counter() - t)
        results[f"{size}x{size}"] = {**summary_ms(samples), "images_per_s": round(count / sum(samples), 2)}
    return results


async def publish_job(js: Any, user_id: uuid.UUID, size: int, i: int) -> None:
    gid = new_id()
    data = GenerationRequested(
        user_id=user_id,
        generation_id=gid,
        kind="image",
        prompt=PROMPTS[i % len(PROMPTS)],
        model="local",
        width=size,
        height=size,
        n=1,
        seed=i,
        cost=5,
        hold_expires_at=utcnow() + timedelta(minutes=15),
        requested_at=utcnow(),
    )
    event = make_event(data, source="bench", subject=gid, event_id=transition_event_id(gid, "requested"))
    await js.publish(event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)})


async def through_worker(nats_url: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    results: dict[str, Any] = {}
    try:
        for size, count in SIZES.items():
            user_id = uuid.uuid4()
            sub = await nc.subscribe(f"generation.completed.{user_id}")
            await publish_job(js, user_id, size, -1)  # warm-up
            await sub.next_msg(timeout=60)
            e2e, run = [], []
            for i in range(count):
                t = time.perf_counter()
                await publish_job(js, user_id, size, i)
                msg = await sub.next_msg(timeout=60)
                e2e.append(time.perf_counter() - t)
                run.append(parse_event(msg.data).data.timings.run_ms / 1000)
            await sub.unsubscribe()
            results[f"{size}x{size}"] = {"end_to_end": summary_ms(e2e), "run": summary_ms(run)}
    finally:
        await nc.close()
    return results


async def burst(nats_url: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        user_id = uuid.uuid4()
        sub = await nc.subscribe(f"generation.completed.{user_id}")
        t = time.perf_counter()
        for i in range(BURST):
            await publish_job(js, user_id, 512, 1000 + i)
        for _ in range(BURST):
            await sub.next_msg(timeout=120)
        elapsed = time.perf_counter() - t
    finally:
        await nc.close()
    return {"jobs": BURST, "size": "512x512", "concurrency": 2, "images_per_s": round(BURST / elapsed, 2)}


def start_worker(env: dict[str, str], concurrency: int, logs: Path) -> ServiceProcess:
    worker_env = {**env, "GENERATION_CONCURRENCY": str(concurrency), "GENERATION_PROGRESS_INTERVAL_S": "0.25"}
    proc = ServiceProcess("generation", free_port(), worker_env, log_path=logs / f"generation-{concurrency}.log")
    proc.start()
    proc.wait_ready()
    return proc


def main() -> None:
    render = bare_render()
    print(json.dumps({"render": render}, indent=2))
    with infrastructure(migrate=False) as (endpoints, env):
        store = asyncio.run(bare_store(endpoints))
        logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"genimage-bench-generation-{os.getpid()}"
        worker = start_worker(env, 1, logs)
        try:
            measured = asyncio.run(through_worker(endpoints.nats_url))
        finally:
            worker.stop()
        worker = start_worker(env, 2, logs)
        try:
            throughput = asyncio.run(burst(endpoints.nats_url))
        finally:
            worker.stop()
    for size, figures in measured.items():
        figures["overhead_p50_ms"] = round(figures["end_to_end"]["p50_ms"] - render[size]["p50_ms"], 3)
    write_results(
        "generation",
        {
            "render": render,
            "store": store,
            "worker": measured,
            "throughput": throughput,
            "notes": "PNG outputs; worker = python -m generation, concurrency 1, own NATS and S3 (moto) "
            "on loopback; end_to_end = publish requested → completed received.",
        },
    )


if __name__ == "__main__":
    main()
