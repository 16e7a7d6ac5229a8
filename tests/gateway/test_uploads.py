"""Uploads: type by content, size and pixel limits, decompression bombs, metadata stripped,
usable as inputs by their owner only."""

from __future__ import annotations

import io
import os
import struct
import zlib

import httpx
import pytest
from PIL import Image, PngImagePlugin

from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore, upload_key
from tests.aio import run_sync
from tests.api import TestUser, assert_problem, signup
from tests.gateway.flows import SMALL


def _image(fmt: str, size: tuple[int, int] = (40, 30), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt, **save)
    return out.getvalue()


def _upload(api: httpx.Client, user: TestUser, data: bytes, name: str = "x.png", ctype: str = "image/png"):  # type: ignore[no-untyped-def]
    return api.post("/v1/uploads", headers=user.auth, files={"file": (name, data, ctype)})


def _stored(stack_env: dict[str, str], user_id: str, upload_id: str) -> bytes:
    import uuid

    settings = CommonSettings(**{k.lower(): v for k, v in stack_env.items() if k.startswith(("S3_",))})
    store = ObjectStore(settings)
    return run_sync(store.get(upload_key(uuid.UUID(user_id), uuid.UUID(upload_id), "png")))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_are_stored_as_png(api: httpx.Client, stack_env: dict[str, str], fmt: str) -> None:
    user = signup(api, wait_for_credits=None)
    # The declared name and type lie on purpose: the content decides.
    r = _upload(api, user, _image(fmt), name="photo.gif", ctype="application/octet-stream")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["content_type"], body["width"], body["height"]) == ("image/png", 40, 30)
    stored = _stored(stack_env, user.id, body["id"])
    assert len(stored) == body["bytes"]
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "PNG" and img.size == (40, 30)


def test_metadata_is_stripped_and_orientation_applied(api: httpx.Client, stack_env: dict[str, str]) -> None:
    user = signup(api, wait_for_credits=None)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "SecretCam"  # camera make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0)}  # GPS
    jpeg = _image("JPEG", (40, 30), exif=exif.tobytes(), comment=b"a secret comment")
    r = _upload(api, user, jpeg, name="p.jpg", ctype="image/jpeg")
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"]) == (30, 40)

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret author")
    png = _image("PNG", pnginfo=info) + b"trailing payload after IEND"
    r2 = _upload(api, user, png)
    assert r2.status_code == 201

    for upload in (r.json(), r2.json()):
        stored = _stored(stack_env, user.id, upload["id"])
        assert b"secret" not in stored.lower() and b"trailing payload" not in stored
        with Image.open(io.BytesIO(stored)) as img:
            assert not img.getexif() and "Author" not in img.info and "exif" not in img.info


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (_image("GIF"), 415, "unsupported_media_type"),
        (_image("BMP"), 415, "unsupported_media_type"),
        (b"%PDF-1.4 not an image at all", 415, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_media_type"),
        (_image("PNG")[:60], 422, "validation_error"),  # truncated
        (b"", 422, "validation_error"),
    ],
)
def test_refused_content(api: httpx.Client, user: TestUser, data: bytes, status: int, code: str) -> None:
    assert_problem(_upload(api, user, data), status, code)


def _png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid PNG whose pixels are all zero: a few hundred kB that would decode to w*h bytes
    (``rows``: how many rows the data really holds)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(raw.compress(row) for _ in range(height if rows is None else rows)) + raw.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(api: httpx.Client, user: TestUser) -> None:
    bomb = _png_bomb(8000, 8000)  # 64 megapixels, over the 40 MP default
    assert len(bomb) < 1_000_000
    problem = assert_problem(_upload(api, user, bomb), 413, "payload_too_large")
    assert "pixels" in problem["detail"]
    # Only the header counts: a bomb whose header claims more than its data holds, too.
    liar = _png_bomb(60000, 60000, rows=1)
    assert_problem(_upload(api, user, liar), 413, "payload_too_large")


def test_size_limit(api: httpx.Client, user: TestUser) -> None:
    big = os.urandom(10 * 1024 * 1024 + 1)
    problem = assert_problem(_upload(api, user, big), 413, "payload_too_large")
    assert problem["instance"] == "/v1/uploads"
    # Far over: refused from Content-Length alone, before the body is read.
    huge = os.urandom(11 * 1024 * 1024)
    assert_problem(_upload(api, user, huge), 413, "payload_too_large")


def test_inputs_must_be_the_users_own_uploads(api: httpx.Client, user: TestUser) -> None:
    mine = _upload(api, user, _image("PNG")).json()["id"]
    other = signup(api, wait_for_credits=None)
    theirs = _upload(api, other, _image("PNG")).json()["id"]

    r = api.post("/v1/generations", headers=user.auth, json={"prompt": "x", **SMALL, "input_image_ids": [theirs]})
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [{"loc": ["body", "input_image_ids", 0], "msg": "no such upload"}]
    assert api.get("/v1/credits", headers=user.auth).json()["reserved"] == 0  # checked before reserving

    r = api.post("/v1/generations", headers=user.auth, json={"prompt": "x", **SMALL, "input_image_ids": [mine]})
    assert r.status_code == 202, r.text
