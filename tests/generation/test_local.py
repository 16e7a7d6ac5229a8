"""The ``local`` renderer: deterministic, prompt-dependent, any size, formats with parameters
embedded, watermark, image inputs, and cancellation in the middle of a render."""

from __future__ import annotations

import io
import itertools
import json

import pytest
from PIL import Image, ImageChops, ImageStat

from generation.cancellation import CancelToken
from generation.errors import JobCanceled
from generation.providers.base import RenderRequest
from generation.providers.local import LocalProvider
from generation.providers.scene import parse


def req(**fields: object) -> RenderRequest:
    base: dict = {
        "kind": "image",
        "prompt": "a lighthouse on a cliff at sunset",
        "negative_prompt": None,
        "width": 256,
        "height": 256,
        "n": 1,
        "seed": 7,
    }
    return RenderRequest(**{**base, **fields})  # type: ignore[arg-type]


async def render(request: RenderRequest) -> list[bytes]:
    async def progress(value: float, stage: str) -> None:
        return None

    outputs = await LocalProvider().generate(request, progress=progress, cancel=CancelToken())
    return [o.data for o in outputs]


def image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference per channel, 0..255."""
    ia, ib = image(a).convert("RGB"), image(b).convert("RGB")
    return sum(ImageStat.Stat(ImageChops.difference(ia, ib)).mean) / 3


def png(color: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_same_prompt_and_seed_render_identical_bytes(fmt: str) -> None:
    first = await render(req(output_format=fmt, n=2))
    second = await render(req(output_format=fmt, n=2))
    assert first == second
    assert first[0] != first[1]  # the outputs of one request differ from each other


async def test_different_prompts_look_clearly_different() -> None:
    prompts = [
        "a lighthouse on a cliff at sunset",
        "city skyline at night, neon cyberpunk",
        "snowy mountains, watercolor",
        "green forest in the morning",
        "desert dunes under the sun, pixel art",
        "quantum kittens dreaming",
        "starry night over a calm lake",
    ]
    pictures = {p: (await render(req(prompt=p)))[0] for p in prompts}
    for a, b in itertools.combinations(prompts, 2):
        assert difference(pictures[a], pictures[b]) > 12, (a, b)
    # Another seed, same prompt: another picture of the same kind.
    assert difference(pictures[prompts[0]], (await render(req(seed=8)))[0]) > 3


def test_prompt_words_choose_the_scene() -> None:
    scene = parse("a red fox in a snowy forest at night, watercolor", "mountains")
    assert scene.time == "night" and scene.style == "watercolor"
    assert {"forest", "snow"} <= scene.elements and "mountains" not in scene.elements
    assert "fox" in scene.unknown
    assert parse("quantum kittens", None).abstract
    assert "mountains" not in parse("mountains at dawn", "mountains").elements


@pytest.mark.parametrize(("width", "height"), [(256, 256), (768, 512), (512, 896), (1024, 576), (64, 1024)])
async def test_any_size(width: int, height: int) -> None:
    (data,) = await render(req(width=width, height=height))
    assert image(data).size == (width, height)


async def test_formats_and_embedded_parameters() -> None:
    request = req(prompt="blue ocean waves", negative_prompt="boats", seed=42, width=320, height=192)
    (data,) = await render(request)
    img = image(data)
    assert img.format == "PNG"
    assert img.text["parameters"] == "blue ocean waves\nNegative prompt: boats\nSeed: 42, Size: 320x192, Model: local"
    params = json.loads(img.text["genimage"])
    assert params | {"index": 0} == {
        "prompt": "blue ocean waves",
        "negative_prompt": "boats",
        "seed": 42,
        "index": 0,
        "model": "local",
        "width": 320,
        "height": 192,
    }
    (jpeg,) = await render(req(output_format="jpeg"))
    assert image(jpeg).format == "JPEG" and b"Seed: 7" in image(jpeg).info["comment"]
    (webp,) = await render(req(output_format="webp"))
    assert image(webp).format == "WEBP"


async def test_watermark_marks_only_the_corner() -> None:
    (plain,) = await render(req(width=512, height=512))
    (marked,) = await render(req(width=512, height=512, watermark=True))
    box = ImageChops.difference(image(plain).convert("RGB"), image(marked).convert("RGB")).getbbox()
    assert box is not None
    left, top, right, bottom = box
    assert left > 256 and top > 384 and right <= 512 and bottom <= 512


async def test_image_inputs_are_blended_into_the_result() -> None:
    (plain,) = await render(req())
    (reddened,) = await render(req(input_images=[png((255, 0, 0))]))
    red_plain = ImageStat.Stat(image(plain).convert("RGB")).mean
    red_input = ImageStat.Stat(image(reddened).convert("RGB")).mean
    assert red_input[0] - red_plain[0] > 40 and red_input[2] < red_plain[2]
    # The second input is laid in as an inset at the bottom left: that corner changes, the top does not.
    (two,) = await render(req(input_images=[png((255, 0, 0)), png((0, 0, 255))]))
    a, b = image(reddened).convert("RGB"), image(two).convert("RGB")
    corner = (0, 160, 96, 256)
    assert ImageStat.Stat(b.crop(corner)).mean[2] - ImageStat.Stat(a.crop(corner)).mean[2] > 60
    assert ImageChops.difference(a.crop((0, 0, 256, 96)), b.crop((0, 0, 256, 96))).getbbox() is None


async def test_an_undecodable_input_is_invalid() -> None:
    from generation.errors import InvalidInput

    with pytest.raises(InvalidInput):
        await render(req(input_images=[b"\x89PNG not really"]))


async def test_cancel_stops_a_video_render_early() -> None:
    seen: list[float] = []
    token = CancelToken()

    async def progress(value: float, stage: str) -> None:
        seen.append(value)
        if stage == "encoding" and value > 0:
            token.cancel()

    request = req(kind="video", width=1280, height=720, duration_s=8.0)
    with pytest.raises(JobCanceled):
        await LocalProvider().generate(request, progress=progress, cancel=token)
    # Stopped well before the end of the 192 frames.
    assert max(seen) < 0.5


async def test_cancel_before_start_renders_nothing() -> None:
    token = CancelToken()
    token.cancel()

    async def progress(value: float, stage: str) -> None:
        return None

    with pytest.raises(JobCanceled):
        await LocalProvider().generate(req(n=4, width=1024, height=1024), progress=progress, cancel=token)
