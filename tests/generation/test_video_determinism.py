"""The MP4 carries nothing of the moment or the machine (wall-clock times, muxer version): a
redelivered job that runs again, on any replica, should upload the very bytes whose sha256 its
``completed`` event carries. (Byte-identical renders within one busy process are not yet
guaranteed: see the closing note of issue 10.)"""

from __future__ import annotations

import pytest

from generation.cancellation import CancelToken
from generation.providers.base import RenderRequest, no_progress
from generation.providers.local import LocalProvider

REQUEST = {
    "kind": "video",
    "prompt": "a lighthouse on a cliff at sunset, watercolor",
    "negative_prompt": None,
    "width": 320,
    "height": 240,
    "n": 1,
    "seed": 11,
    "watermark": True,
    "duration_s": 2.0,
}


@pytest.mark.timeout(60)
async def test_mp4_carries_no_wall_clock_time_nor_muxer_version() -> None:
    (out,) = await LocalProvider().generate(RenderRequest(**REQUEST), progress=no_progress, cancel=CancelToken())  # type: ignore[arg-type]
    assert b"Lavf" not in out.data
    for box in (b"mvhd", b"tkhd", b"mdhd"):
        at = out.data.find(box)
        assert at > 0, box
        version = out.data[at + 4]
        width = 8 if version == 1 else 4
        times = out.data[at + 8 : at + 8 + 2 * width]
        assert times == bytes(2 * width), f"{box!r} creation/modification time set"
