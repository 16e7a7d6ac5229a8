"""The worker as a process on real NATS and S3: events, outputs in object storage, image inputs,
permanent failures, remote providers with fallbacks, video, poison messages, deleted images,
redelivered settled jobs, metrics."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta

import av
import httpx
from PIL import Image, ImageStat

from genimage_common.events import (
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationStarted,
    utcnow,
)
from genimage_common.ids import new_id, transition_event_id
from genimage_common.storage import ObjectStore, upload_key
from genimage_devstack.stack import ServiceProcess
from tests.generation.bus import Bus, kind_of
from tests.generation.fakes import Fakes
from tests.polling import eventually_async


async def upload(store: ObjectStore, user_id: uuid.UUID, color: tuple[int, int, int]) -> uuid.UUID:
    """An upload as the gateway stores it (re-encoded PNG under the user's prefix)."""
    upload_id = new_id()
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), color).save(buf, format="PNG")
    await store.put(upload_key(user_id, upload_id, "png"), buf.getvalue(), "image/png")
    return upload_id


async def test_outputs_events_and_objects(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    req = await bus.request(n=3, width=320, height=192, prompt="snowy mountains at dawn", seed=11)
    gid, uid = req.data.generation_id, req.data.user_id
    done = await bus.terminal(uid)
    assert isinstance(done.data, GenerationCompleted)
    assert done.id == transition_event_id(gid, "terminal")
    events = await bus.events(uid)
    kinds = [kind_of(e) for e in events]
    assert (
        kinds[0] == "generation.requested" and kinds[1] == "generation.started" and kinds[-1] == "generation.completed"
    )
    started = [e.data for e in events if isinstance(e.data, GenerationStarted)]
    assert [(s.provider, s.attempt) for s in started] == [("local", 1)]
    progress = [e.data.progress for e in events if isinstance(e.data, GenerationProgress)]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0

    data = done.data
    assert (data.provider, data.model, data.seed) == ("local", "local", 11)
    assert data.timings.queue_ms >= 0 and data.timings.run_ms > 0
    assert [o.index for o in data.outputs] == [0, 1, 2]
    assert len({o.sha256 for o in data.outputs}) == 3
    for o in data.outputs:
        assert o.object_key == f"users/{uid}/generations/{gid}/{o.index}.png"
        assert o.thumbnail_key == f"users/{uid}/generations/{gid}/{o.index}.thumb.webp"
        original = await store.get(o.object_key)
        assert hashlib.sha256(original).hexdigest() == o.sha256 and len(original) == o.bytes
        with Image.open(io.BytesIO(original)) as img:
            assert (img.format, img.size, o.content_type) == ("PNG", (320, 192), "image/png")
            assert "Seed: 11, Size: 320x192, Model: local" in img.text["parameters"]
        with Image.open(io.BytesIO(await store.get(o.thumbnail_key))) as thumb:
            assert thumb.format == "WEBP" and thumb.size == (256, 154)
    assert await store.stat(f"users/{uid}/generations/{gid}/manifest.json")


async def test_deterministic_and_formats_through_the_worker(worker: ServiceProcess, bus: Bus) -> None:
    first = await bus.request(prompt="blue ocean waves", seed=1234, output_format="jpeg")
    second = await bus.request(prompt="blue ocean waves", seed=1234, output_format="jpeg")
    other = await bus.request(prompt="green forest", seed=1234, output_format="webp")
    a, b, c = [(await bus.terminal(r.data.user_id)).data for r in (first, second, other)]
    assert a.outputs[0].sha256 == b.outputs[0].sha256 != c.outputs[0].sha256
    assert a.outputs[0].content_type == "image/jpeg" and a.outputs[0].object_key.endswith("/0.jpg")
    assert c.outputs[0].content_type == "image/webp" and c.outputs[0].object_key.endswith("/0.webp")


async def test_image_inputs_come_from_the_users_uploads(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    uid = uuid.uuid4()
    red = await upload(store, uid, (255, 0, 0))
    plain = await bus.request(prompt="a quiet lake")
    await bus.request(user_id=uid, prompt="a quiet lake", input_image_ids=[red])
    without = (await bus.terminal(plain.data.user_id)).data.outputs[0]
    with_input = (await bus.terminal(uid)).data.outputs[0]
    means = []
    for o in (without, with_input):
        with Image.open(io.BytesIO(await store.get(o.object_key))) as img:
            means.append(ImageStat.Stat(img.convert("RGB")).mean)
    assert means[1][0] - means[0][0] > 40  # the red upload shows through


async def test_missing_or_foreign_upload_fails_at_once(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    someone_else = await upload(store, uuid.uuid4(), (0, 255, 0))
    req = await bus.request(input_image_ids=[someone_else])
    done = await bus.terminal(req.data.user_id)
    assert isinstance(done.data, GenerationFailed)
    assert done.data.error.code == "invalid_input" and not done.data.error.retryable
    assert done.data.attempts == 1  # permanent: not redelivered
    assert "generation.started" not in [kind_of(e) for e in await bus.events(req.data.user_id)]


async def test_permanent_errors_end_the_job_at_once(worker: ServiceProcess, bus: Bus) -> None:
    unknown = await bus.request(model="no-such-model")
    video_on_openai = await bus.request(model="openai", kind="video", width=1280, height=720, duration_s=2)
    expired = await bus.request(hold_expires_at=utcnow() - timedelta(seconds=1))
    huge = await bus.request(width=100_000, height=8)
    cases = [
        (unknown, "invalid_input"),
        (video_on_openai, "invalid_input"),
        (expired, "deadline_exceeded"),
        (huge, "invalid_input"),
    ]
    for req, code in cases:
        done = await bus.terminal(req.data.user_id)
        assert isinstance(done.data, GenerationFailed), done
        assert (done.data.error.code, done.data.attempts) == (code, 1)
        assert "generation.started" not in [kind_of(e) for e in await bus.events(req.data.user_id)]


async def test_remote_providers_with_fallbacks_and_error_codes(worker: ServiceProcess, bus: Bus, fakes: Fakes) -> None:
    ok = await bus.request(model="replicate-solo", n=2, prompt=fakes.script("worker replicate ok", ["ok"]))
    down = await bus.request(model="gemini", prompt=fakes.script("worker gemini down", ["503"]))
    refused = await bus.request(model="stability", prompt=fakes.script("worker stability refuse", ["refuse"]))
    bad_key = await bus.request(model="openai-solo", prompt=fakes.script("worker openai 401", ["401"]))

    done = (await bus.terminal(ok.data.user_id)).data
    assert (done.provider, done.model, len(done.outputs), done.provider_cost_usd) == (
        "replicate",
        "replicate-solo",
        2,
        0.02,
    )

    done = (await bus.terminal(down.data.user_id)).data
    assert (done.provider, done.model) == ("local", "local")
    started = [e.data for e in await bus.events(down.data.user_id) if isinstance(e.data, GenerationStarted)]
    assert [s.provider for s in started] == ["gemini", "local"]

    for req, code in ((refused, "content_refused"), (bad_key, "provider_auth")):
        failed = (await bus.terminal(req.data.user_id)).data
        assert isinstance(failed, GenerationFailed) and failed.error.code == code and not failed.error.retryable
    # Key problems are for operators: the user reads no provider detail.
    assert failed.error.message == "model 'openai-solo' is unavailable right now"


def probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        return {
            "codec": stream.codec_context.name,
            "pix_fmt": frames[0].format.name,
            "size": (stream.width, stream.height),
            "fps": stream.average_rate,
            "frames": len(frames),
            "duration": container.duration / 1_000_000,
            "first": frames[0].to_image(),
        }


async def test_video_from_prompt(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    req = await bus.request(
        kind="video",
        prompt="city skyline at night",
        width=1280,
        height=720,
        aspect_ratio="16:9",
        duration_s=2.0,
        cost=10,
    )
    done = (await bus.terminal(req.data.user_id, timeout=60)).data
    assert isinstance(done, GenerationCompleted)
    (out,) = done.outputs
    assert (out.content_type, out.width, out.height, out.duration_s) == ("video/mp4", 1280, 720, 2.0)
    assert out.object_key.endswith("/0.mp4")
    data = await store.get(out.object_key)
    assert hashlib.sha256(data).hexdigest() == out.sha256
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: the index comes first
    info = probe(data)
    assert (info["codec"], info["pix_fmt"], info["size"], info["fps"]) == ("h264", "yuv420p", (1280, 720), 24)
    assert info["frames"] == 48 and abs(info["duration"] - 2.0) < 0.05
    with Image.open(io.BytesIO(await store.get(out.thumbnail_key))) as poster:
        assert poster.format == "WEBP" and poster.size == (256, 144)


async def test_video_from_an_input_image(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    uid = uuid.uuid4()
    blue = await upload(store, uid, (20, 60, 230))
    await bus.request(
        user_id=uid,
        kind="video",
        prompt="slow zoom",
        width=720,
        height=1280,
        aspect_ratio="9:16",
        duration_s=2.0,
        input_image_ids=[blue],
        cost=10,
    )
    done = (await bus.terminal(uid, timeout=60)).data
    (out,) = done.outputs
    info = probe(await store.get(out.object_key))
    assert info["size"] == (720, 1280) and info["frames"] == 48
    r, _, b = ImageStat.Stat(info["first"].convert("RGB")).mean
    assert b > 180 and r < 60  # the frames are the uploaded picture


async def test_poison_messages_go_to_the_dlq_without_blocking(worker: ServiceProcess, bus: Bus) -> None:
    subjects = [f"generation.requested.{uuid.uuid4()}" for _ in range(2)]
    await bus.js.publish(subjects[0], b"\x00 this is not json", headers={"Nats-Msg-Id": str(uuid.uuid4())})
    await bus.js.publish(
        subjects[1],
        b'{"specversion": "1.0", "type": "genimage.generation.requested.v1"}',
        headers={"Nats-Msg-Id": str(uuid.uuid4())},
    )
    after = await bus.request()
    assert isinstance((await bus.terminal(after.data.user_id)).data, GenerationCompleted)
    for subject in subjects:
        (dead,) = await eventually_async(lambda s=subject: bus.dead_letters(s), what=f"{subject} dead-lettered")
        assert dead.headers["Genimage-Dlq-Deliveries"] == "1"
        assert "undecodable" in dead.headers["Genimage-Dlq-Error"]


async def test_unexpected_failures_are_redelivered_then_dead_lettered(
    worker: ServiceProcess, bus: Bus, store: ObjectStore
) -> None:
    # A corrupted manifest makes every attempt fail (not a generation error: storage state).
    uid, gid = uuid.uuid4(), new_id()
    await store.put(f"users/{uid}/generations/{gid}/manifest.json", b"{corrupt", "application/json")
    broken = await bus.request(user_id=uid, generation_id=gid)
    fine = await bus.request()
    assert isinstance((await bus.terminal(fine.data.user_id)).data, GenerationCompleted)  # not blocked
    failed = (await bus.terminal(uid)).data
    assert isinstance(failed, GenerationFailed)
    # GENERATION_MAX_DELIVERIES=3 in these tests: three attempts, then the outcome and the DLQ.
    assert (failed.error.code, failed.attempts) == ("internal_error", 3)
    (dead,) = await eventually_async(lambda: bus.dead_letters(broken.nats_subject), what="dead-lettered")
    assert dead.headers["Genimage-Dlq-Deliveries"] == "3"


async def test_a_settled_job_redelivered_never_renders_again(worker: ServiceProcess, bus: Bus) -> None:
    req = await bus.request(prompt="green forest", n=2)
    uid = req.data.user_id
    done = await bus.terminal(uid)
    # The same request again, past JetStream's duplicate detection (as after a lost ack).
    await bus.publish(req, "GENERATION", msg_id=str(uuid.uuid4()))

    async def consumed() -> bool:
        info = await bus.js.consumer_info("GENERATION", "generation-requested")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually_async(consumed, what="redelivered request consumed")
    events = await bus.events(uid)
    assert [kind_of(e) for e in events].count("generation.requested") == 2
    assert [kind_of(e) for e in events].count("generation.started") == 1
    completed = [e for e in events if kind_of(e) == "generation.completed"]
    assert completed == [done]


async def test_deleted_images_objects_are_removed(worker: ServiceProcess, bus: Bus, store: ObjectStore) -> None:
    uid, other = uuid.uuid4(), uuid.uuid4()
    mine = [f"users/{uid}/generations/{new_id()}/0.png", f"users/{uid}/generations/{new_id()}/0.thumb.webp"]
    foreign = f"users/{other}/generations/{new_id()}/0.png"
    for key in [*mine, foreign]:
        await store.put(key, b"x", "image/png")
    await bus.image_deleted(uid, [*mine, foreign, f"users/{uid}/generations/{new_id()}/9.png"])

    async def gone() -> bool:
        return all([await store.stat(k) is None for k in mine])

    await eventually_async(gone, what="objects deleted")
    assert await store.stat(foreign) == 1  # never another user's objects


async def test_metrics(worker: ServiceProcess, bus: Bus, fakes: Fakes) -> None:
    await bus.terminal((await bus.request()).data.user_id)
    await bus.terminal((await bus.request(model="openai-solo", prompt=fakes.script("metrics ok", ["ok"]))).data.user_id)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{worker.url}/metrics")).text
    assert 'genimage_generations_total{kind="image",model="local",status="succeeded"}' in text
    assert 'genimage_generation_duration_seconds_bucket{kind="image",le="+Inf",phase="queue"}' in text
    assert 'genimage_generation_duration_seconds_bucket{kind="image",le="+Inf",phase="run"}' in text
    assert 'genimage_provider_requests_total{outcome="ok",provider="openai"}' in text
    assert 'genimage_provider_requests_total{outcome="ok",provider="local"}' in text
