"""Runs the disk S3 store (``genimage_devstack.s3server``, unchanged) with a kill -9 planted at one
point of a multipart upload, for the tests of what such a kill leaves behind: when the server reaches
the point it SIGKILLs itself, as the OOM killer or a crash would, at a moment an external kill
cannot hit reliably.

    python s3_crashpoint.py --crash-at POINT[:N] <s3server arguments>

POINT (the N-th time it is reached, default the first):
- ``assembly``: CompleteMultipartUpload has copied one part into its scratch file; the object is
  half assembled on disk, not yet renamed into place.
- ``sidecar``: the assembled object is renamed over the key; its sidecar write is cut short
  (a half ``.json.tmp``, the previous sidecar still in place).
- ``part-checksum``: UploadPart has renamed the part into place; its ``.md5`` is not written yet.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
from typing import Any

import nanio.storage.multipart as nanio_multipart

from genimage_devstack import s3server


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def plant(point: str, nth: int) -> None:
    reached = 0

    def reach() -> bool:
        nonlocal reached
        reached += 1
        return reached == nth

    if point == "assembly":
        copy_part = nanio_multipart._copy_part

        def copy_then_die(*args: Any, **kwargs: Any) -> None:
            copy_part(*args, **kwargs)
            if reach():
                _die()

        nanio_multipart._copy_part = copy_then_die
    elif point == "sidecar":
        write_metadata = nanio_multipart.write_metadata

        def write_half_then_die(path: pathlib.Path, info: Any) -> None:
            if not reach():
                write_metadata(path, info)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + ".tmp").write_bytes(b'{"etag":"')
            _die()

        nanio_multipart.write_metadata = write_half_then_die
    elif point == "part-checksum":
        write_text = pathlib.Path.write_text

        def die_before_checksum(self: pathlib.Path, *args: Any, **kwargs: Any) -> int:
            if self.suffix == ".md5" and reach():
                _die()
            return write_text(self, *args, **kwargs)

        pathlib.Path.write_text = die_before_checksum  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--crash-at", required=True)
    args, rest = parser.parse_known_args()
    point, _, nth = args.crash_at.partition(":")
    plant(point, int(nth or 1))
    s3server.main(rest)


if __name__ == "__main__":
    main()
