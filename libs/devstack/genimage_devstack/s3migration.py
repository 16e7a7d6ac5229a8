"""Moving the objects of the previous release's S3 stand-in (moto plus a request recording, ADR 2)
into the disk store (ADR 4), once, when `make run` first starts over such a ``.data/``.

The recording is replayed into a moto started for the purpose on a free port, every object is
copied into the disk store with the ``minio`` client, and the recording is renamed
``recording.jsonl.migrated`` (kept: it is the only copy should anything have been missed). A copy
is idempotent, so an interrupted migration simply runs again on the next start.

Concurrent requests could interleave two rows of the recording on one line; those rows are
salvaged where they parse. When nothing can be replayed the start is refused with a paragraph that
says what to run, never a stack trace.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from .processes import free_port

LEGACY_RECORDING = "recording.jsonl"
MIGRATED_SUFFIX = ".migrated"


class MigrationRefused(SystemExit):
    """Stops `make run` with the message alone on stderr: a SystemExit prints no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _say(line: str) -> None:
    print(f"[devstack] s3: {line}", flush=True)


def salvage(recording: Path, out: Path) -> tuple[int, int]:
    """Copy every request row that parses into ``out``, one per line; returns (rows, unreadable
    fragments). Rows glued on one line by concurrent appends are split apart."""
    decoder = json.JSONDecoder()
    rows = bad = 0
    with recording.open(encoding="utf-8", errors="replace") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            pos, end = 0, len(line)
            damaged = False  # inside an unreadable stretch: it counts once, however it is resynced
            while pos < end:
                while pos < end and line[pos].isspace():
                    pos += 1
                if pos >= end:
                    break
                try:
                    row, nxt = decoder.raw_decode(line, pos)
                except json.JSONDecodeError:
                    bad += not damaged
                    damaged = True
                    pos = line.find('{"', pos + 1)  # the next place a row could start
                    if pos < 0:
                        break
                    continue
                if isinstance(row, dict) and isinstance(row.get("method"), str) and isinstance(row.get("url"), str):
                    dst.write(json.dumps(row) + "\n")
                    rows += 1
                    damaged = False
                else:  # a fragment of a row (its headers, say), not a request
                    bad += not damaged
                    damaged = True
                pos = nxt
    return rows, bad


def refusal(recording: Path, reason: str) -> MigrationRefused:
    return MigrationRefused(
        f"genimage cannot start: the objects under {recording.parent} were stored by the previous "
        f"release as a moto request recording ({recording.name}), and moving them into the new disk "
        f"store failed: {reason}. Nothing has been deleted. To start without those objects (images "
        f"made before will show as missing), move the recording aside and start again: "
        f"`mv {recording} {recording}.unreadable && make run`. To start from empty data altogether: "
        f"`make clean-data && make run`."
    )


def _client(url: str, access_key: str, secret_key: str) -> Minio:
    parts = urlsplit(url)
    return Minio(parts.netloc, access_key=access_key, secret_key=secret_key, secure=False, region="us-east-1")


def copy_all(source: Minio, target: Minio) -> tuple[int, int, int]:
    """Every object of every bucket, with its content type; returns (buckets, objects, bytes)."""
    buckets = objects = size = 0
    for bucket in source.list_buckets():
        buckets += 1
        if not target.bucket_exists(bucket.name):
            target.make_bucket(bucket.name)
        for item in source.list_objects(bucket.name, recursive=True):
            assert item.object_name is not None
            resp = source.get_object(bucket.name, item.object_name)
            try:
                data = resp.read()
                content_type = resp.headers.get("Content-Type") or "application/octet-stream"
            finally:
                resp.close()
                resp.release_conn()
            target.put_object(bucket.name, item.object_name, io.BytesIO(data), len(data), content_type=content_type)
            if target.stat_object(bucket.name, item.object_name).size != len(data):
                raise RuntimeError(f"{bucket.name}/{item.object_name} did not arrive whole")
            objects += 1
            size += len(data)
    return buckets, objects, size


def migrate_recording(
    recording: Path,
    *,
    target: str,
    access_key: str,
    secret_key: str,
    log_dir: Path,
    say: Callable[[str], None] = _say,
) -> None:
    from .s3 import MotoS3  # s3 imports this module

    say(f"found {recording} from the previous release (moto); moving its objects into the disk store")
    salvaged = recording.with_name(recording.name + ".salvaged")
    try:
        rows, bad = salvage(recording, salvaged)
        if bad:
            say(
                f"{bad} fragment(s) of the recording are unreadable (rows written over each other); "
                f"{rows} requests kept"
            )
        if rows == 0 and bad == 0:
            done = recording.with_name(recording.name + MIGRATED_SUFFIX)
            recording.rename(done)
            say(f"the recording is empty: nothing to move; kept as {done}")
            return
        if rows == 0:
            raise refusal(recording, "no request in it can be read")
        moto = MotoS3(log_dir.parent, port=free_port(), replay=salvaged, log_name="s3-migration.log")
        try:
            moto.start()
        except Exception as exc:
            raise refusal(
                recording, f"replaying it failed ({_one_line(exc)}; see {log_dir / 's3-migration.log'})"
            ) from None
        try:
            buckets, objects, size = copy_all(
                _client(moto.url, "migration", "migration"), _client(target, access_key, secret_key)
            )
        except (S3Error, OSError, RuntimeError) as exc:
            raise refusal(recording, f"copying an object failed ({_one_line(exc)})") from None
        finally:
            moto.stop()
        done = recording.with_name(recording.name + MIGRATED_SUFFIX)
        recording.rename(done)
        say(f"copied {objects} object(s), {size} bytes, in {buckets} bucket(s); the recording is kept as {done}")
    finally:
        salvaged.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
