"""Uploads cannot make the gateway's memory balloon: what an image costs decoded (width x
height x bytes per pixel, from its header, before any pixel is decoded) is limited per upload,
and concurrent uploads share one budget. Measured on a real gateway process: its peak resident
memory (``VmHWM``, reset between phases through ``/proc/<pid>/clear_refs``)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from genimage_devstack.processes import free_port
from genimage_devstack.stack import ServiceProcess, launch
from tests.api import TestUser, assert_problem, signup
from tests.marks import starts_services

pytestmark = pytest.mark.timeout(300)

MB = 1024 * 1024
BUDGET = 160 * MB


def _png_bomb(width: int, height: int, *, color_type: int = 0) -> bytes:
    """A valid PNG whose pixels are all zero: tiny on the wire, huge decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    bands = {0: 1, 2: 3, 6: 4}[color_type]
    z = zlib.compressobj(9)
    row = b"\x00" * (width * bands + 1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> int:
    """Reset the peak to the current resident size; returns that size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid)["VmRSS"]


@pytest.fixture(scope="module")
@starts_services
def gateway(
    stack_env: dict[str, str], services: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A gateway of its own, so that its memory is only what these uploads cost. Default
    limits, but a budget the test can fill and a generous wait for it."""
    env = {
        **stack_env,
        "GATEWAY_BACKGROUND_WORKERS": "false",
        "GATEWAY_UPLOAD_MEMORY_BUDGET_BYTES": str(BUDGET),
        "GATEWAY_UPLOAD_MEMORY_WAIT_S": "60",
    }
    logs = tmp_path_factory.mktemp("upload-memory")
    (proc,) = launch([ServiceProcess("gateway", free_port(), env, log_path=logs / "gateway.log")])
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(gateway: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


def _pid(gateway: ServiceProcess) -> int:
    assert gateway.proc.pid is not None
    return gateway.proc.pid


def _upload(client: httpx.Client, user: TestUser, data: bytes) -> httpx.Response:
    return client.post("/v1/uploads", headers=user.auth, files={"file": ("x.png", data, "image/png")})


def _warm(client: httpx.Client, user: TestUser) -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, format="PNG")
    assert _upload(client, user, out.getvalue()).status_code == 201


def test_bombs_under_the_pixel_limit_are_refused_by_their_decoded_size(
    client: httpx.Client, gateway: ServiceProcess
) -> None:
    user = signup(client, wait_for_credits=None)
    _warm(client, user)
    gray, rgb = _png_bomb(6300, 6300), _png_bomb(6300, 6300, color_type=2)
    assert len(gray) < 200_000 and len(rgb) < 200_000  # 39.7 megapixels: under the 40 MP limit
    pid = _pid(gateway)
    base = _reset_peak(pid)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda data: _upload(client, user, data), [gray, rgb] * 3))
    peak = _status(pid)["VmHWM"] - base
    print(f"6 concurrent 6300x6300 PNG bombs: peak grew by {peak / MB:.1f} MiB")
    for r in answers:
        problem = assert_problem(r, 413, "payload_too_large")
        assert "decoded" in problem["detail"], problem
        assert problem["decoded_bytes"] > problem["max_decoded_bytes"]
    assert peak < 40 * MB, f"peak grew by {peak / MB:.0f} MiB"


def test_concurrent_uploads_share_one_budget(client: httpx.Client, gateway: ServiceProcess) -> None:
    user = signup(client, wait_for_credits=None)
    _warm(client, user)
    # Each fits the per-upload limit; eight at once would need several times the budget.
    images = [_png_bomb(3000, 3000, color_type=2) for _ in range(8)]
    pid = _pid(gateway)
    base = _reset_peak(pid)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda data: _upload(client, user, data), images))
    peak = _status(pid)["VmHWM"] - base
    print(f"8 concurrent 3000x3000 RGB uploads: peak grew by {peak / MB:.1f} MiB (budget {BUDGET / MB:.0f} MiB)")
    for r in answers:
        assert r.status_code == 201, r.text
        assert (r.json()["width"], r.json()["height"]) == (3000, 3000)
    # The budget, plus what the HTTP bodies and the allocator keep around.
    assert peak < BUDGET + 48 * MB, f"peak grew by {peak / MB:.0f} MiB with a {BUDGET / MB:.0f} MiB budget"
