"""Short clips from a still: a slow pan and zoom (the Ken Burns effect) over a canvas larger
than the frame, encoded as H.264 in MP4 (yuv420p, 24 fps, ``+faststart`` so players can
start before the download ends), with the first frame as the poster."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
from PIL import Image

from .. import imaging

FPS = 24
# Output must be a pure function of the request (a re-run, on any replica, uploads the very
# bytes whose sha256 the ``completed`` event carries). Encoder threads are pinned ("auto" is the
# host's core count, and slices follow it). mbtree is off: with it, the same frames encoded after
# an encode of another size came out different (x264 state left over from the earlier encode in
# the process; 2-8 distinct outputs in 20 runs, even single-threaded; 1 in 45 without mbtree).
ENCODER_THREADS = 1
X264_PARAMS = f"threads={ENCODER_THREADS}:lookahead-threads=1:sliced-threads=0:mbtree=0:non-deterministic=0"
# The canvas is this much larger than the frame: room to pan and zoom without borders.
CANVAS_SCALE = 1.25
ZOOM = 0.18
Report = Callable[[float], None]


@dataclass(frozen=True)
class Clip:
    data: bytes
    duration_s: float
    frames: int
    poster: bytes


def canvas_size(width: int, height: int) -> tuple[int, int]:
    return int(width * CANVAS_SCALE) // 2 * 2, int(height * CANVAS_SCALE) // 2 * 2


def frame_count(duration_s: float) -> int:
    return max(1, round(duration_s * FPS))


def ease(t: float) -> float:
    return (1 - math.cos(t * math.pi)) / 2


def camera(t: float, canvas: tuple[int, int], frame: tuple[int, int], direction: float) -> tuple[float, ...]:
    """The canvas rectangle shown at time ``t`` (0..1): zoom in while drifting across."""
    cw, ch = canvas
    fw, fh = frame
    e = ease(t)
    # Visible size shrinks from the whole canvas to (1 - ZOOM) of it, keeping the frame's aspect.
    scale = min(cw / fw, ch / fh) * (1 - ZOOM * e)
    vw, vh = fw * scale, fh * scale
    angle = direction * math.tau
    # The centre drifts along a direction chosen by the seed, within the free margin.
    mx, my = (cw - vw) / 2, (ch - vh) / 2
    cx = cw / 2 + math.cos(angle) * mx * (2 * e - 1) * 0.9
    cy = ch / 2 + math.sin(angle) * my * (2 * e - 1) * 0.9
    return cx - vw / 2, cy - vh / 2, cx + vw / 2, cy + vh / 2


def render_clip(
    still: Image.Image,
    *,
    width: int,
    height: int,
    duration_s: float,
    watermark: bool,
    direction: float,
    check: Callable[[], None],
    report: Report,
) -> Clip:
    still = still.convert("RGB")
    frames = frame_count(duration_s)
    mark = _watermark_layer(width, height) if watermark else None
    poster: bytes | None = None
    # +faststart rewrites the file (moov atom first): it needs a seekable file, not a buffer.
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="genimage-")
    os.close(fd)
    try:
        # Deterministic bytes: bitexact leaves out the muxer's version string (and any wall-clock
        # creation/modification time in mvhd/tkhd stays 0); see X264_PARAMS for the encoder.
        muxer = {"movflags": "+faststart", "fflags": "+bitexact"}
        with av.open(path, mode="w", format="mp4", options=muxer) as container:
            stream = container.add_stream(
                "libx264",
                rate=FPS,
                options={"preset": "veryfast", "crf": "21", "flags": "+bitexact", "x264-params": X264_PARAMS},
            )
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, FPS)
            stream.codec_context.gop_size = FPS * 2
            stream.codec_context.thread_count = ENCODER_THREADS
            for i in range(frames):
                check()
                t = i / (frames - 1) if frames > 1 else 0.0
                box = camera(t, still.size, (width, height), direction)
                img = still.transform((width, height), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
                if mark is not None:
                    img.paste(mark, (0, 0), mark)
                if poster is None:
                    poster = imaging.png(img)
                frame = av.VideoFrame.from_image(img)
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
                report((i + 1) / frames * 0.97)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    assert poster is not None
    return Clip(data=data, duration_s=frames / FPS, frames=frames, poster=poster)


def _watermark_layer(width: int, height: int) -> Image.Image:
    blank = Image.new("RGB", (width, height), (0, 0, 0))
    marked = imaging.watermark(blank)
    # Only the mark's pixels: alpha from the difference with the blank frame.
    alpha = marked.convert("L").point(lambda v: 255 if v > 8 else 0)
    layer = marked.convert("RGBA")
    layer.putalpha(alpha)
    return layer
