"""The disk S3 store that `make run` starts (ADR 4): nanio's S3 server over ``<data_dir>/s3``, run as
``python -m genimage_devstack.s3server``, with what nanio 0.1.7 lacks for our durability promise
added around it — not copied into it:

- a PUT is answered only after the directory entries it created or renamed are on disk (nanio
  fsyncs the file, never its directory, so an acknowledged object could vanish in a power cut);
- a staging file left by a killed upload (``.tmp.<hex>`` beside the object) is never listed or
  served, and is swept away in the background after start (nanio would list and serve it);
- a sidecar left stale or half-made by a kill between nanio's rename and its metadata write is
  detected on read and rebuilt from the object's own bytes (nanio would serve the old size and
  etag, and its stale ``.json.tmp`` made every later PUT of that key fail with 500);
- a body that does not hash to its signed ``x-amz-content-sha256`` is refused (nanio checks the
  signature over the claimed hash, never the hash against the body).

Start time does not depend on the data: nothing is scanned before the port opens.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import mimetypes
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from nanio.app import build_app
from nanio.auth.credentials import EnvCredentialResolver
from nanio.config import Settings
from nanio.errors import InvalidObjectName, NoSuchKey, S3Error
from nanio.etag import StreamingMd5
from nanio.storage.backend import ObjectInfo
from nanio.storage.filesystem import FilesystemStorage
from nanio.storage.metadata import write_metadata
from nanio.storage.paths import META_DIR_NAME, metadata_path, object_path

log = logging.getLogger("genimage.s3server")

# nanio stages an upload as ``.tmp.<uuid hex>`` in the object's own folder, then renames it.
STAGING_PREFIX = ".tmp."
HEALTH_PATH = "/-/healthz"  # no bucket name may start with "-", so this never shadows a bucket
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_staging(key: str) -> bool:
    return any(part.startswith(STAGING_PREFIX) for part in key.split("/"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class XAmzContentSHA256Mismatch(S3Error):
    code = "XAmzContentSHA256Mismatch"
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."
    http_status = 400


class DurableStorage(FilesystemStorage):
    async def put_object(self, bucket: str, key: str, body: AsyncIterator[bytes], **kwargs: Any) -> ObjectInfo:
        if is_staging(key):
            raise InvalidObjectName(f"key segments starting with {STAGING_PREFIX!r} are reserved")
        final = object_path(self.data_dir, bucket, key)
        meta = metadata_path(self.data_dir, bucket, key)
        # nanio writes the sidecar through ``<sidecar>.tmp`` opened with O_EXCL, synchronously on the
        # event loop: one present while we are at an await point was left by a killed server.
        meta.with_name(meta.name + ".tmp").unlink(missing_ok=True)
        info = await super().put_object(bucket, key, body, **kwargs)
        # The rename and any folder created for this key are entries in their parent directories:
        # only an fsync of those directories makes them survive a crash of the machine.
        await asyncio.to_thread(self._sync_parents, final.parent, meta.parent)
        return info

    def _sync_parents(self, *leaves: Path) -> None:
        root = self.data_dir
        done: set[Path] = set()
        for leaf in leaves:
            d = leaf
            while d not in done and (d == root or root in d.parents):
                fsync_dir(d)
                done.add(d)
                d = d.parent

    def delete_object(self, bucket: str, key: str) -> None:
        if is_staging(key):  # an upload in flight, not an object
            return
        super().delete_object(bucket, key)

    def _read_or_synthesize_metadata(self, bucket: str, key: str, opath: Path) -> ObjectInfo:
        if is_staging(key):
            raise NoSuchKey(resource=f"{bucket}/{key}")
        info = super()._read_or_synthesize_metadata(bucket, key, opath)
        st = opath.stat(follow_symlinks=False)
        # nanio writes the sidecar right after renaming the object, stamped with the time then:
        # a consistent sidecar has the object's size and is not older than the object's bytes.
        if info.size == st.st_size and info.etag != '""' and info.last_modified.timestamp() >= st.st_mtime:
            return info
        return self._rebuild_metadata(bucket, key, opath)

    def _rebuild_metadata(self, bucket: str, key: str, opath: Path) -> ObjectInfo:
        md5 = StreamingMd5()
        with opath.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                md5.update(chunk)
        st = opath.stat(follow_symlinks=False)
        info = ObjectInfo(
            key=key,
            size=md5.size,
            etag=md5.quoted_etag(),
            # Not older than the bytes, so the next read finds it consistent.
            last_modified=max(datetime.now(tz=UTC), datetime.fromtimestamp(st.st_mtime, tz=UTC)),
            content_type=mimetypes.guess_type(key)[0] or "application/octet-stream",
        )
        meta = metadata_path(self.data_dir, bucket, key)
        meta.with_name(meta.name + ".tmp").unlink(missing_ok=True)
        write_metadata(meta, info)
        log.warning("rebuilt the metadata of %s/%s from its bytes (left stale by an interrupted write)", bucket, key)
        return info


def sweep_staging(data_dir: Path, *, older_than: float) -> int:
    """Remove upload staging files and sidecar temps that a killed server left behind. Runs in the
    background after the port is open, so start time stays independent of the amount of data."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(data_dir):
        if Path(dirpath) == data_dir:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # buckets only
        in_meta = META_DIR_NAME in Path(dirpath).parts
        for name in filenames:
            orphan = name.endswith(".json.tmp") if in_meta else name.startswith(STAGING_PREFIX)
            if not orphan:
                continue
            path = Path(dirpath) / name
            try:
                if path.stat(follow_symlinks=False).st_mtime < older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


class PayloadDigest:
    """ASGI wrapper: checks the body of a PUT against its signed ``x-amz-content-sha256`` and
    answers the launcher's health probe without credentials."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        claimed = ""
        if scope["type"] == "http" and scope["method"] == "PUT":
            claimed = dict(scope["headers"]).get(b"x-amz-content-sha256", b"").decode("latin-1")
        if not _SHA256_HEX.fullmatch(claimed):  # UNSIGNED-PAYLOAD, streaming chunks, or not a PUT
            await self.app(scope, receive, send)
            return
        digest = hashlib.sha256()

        async def checked_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
                # Raised inside nanio's body loop, which then drops its staging file.
                if not message.get("more_body") and digest.hexdigest() != claimed:
                    raise XAmzContentSHA256Mismatch()
            return message

        await self.app(scope, checked_receive, send)


def build(data_dir: Path, *, region: str = "us-east-1") -> PayloadDigest:
    settings = Settings(
        data_dir=data_dir.resolve(), region=region, credentials=EnvCredentialResolver(), access_log=False
    )
    app = build_app(settings)
    app.state.storage = DurableStorage(settings.data_dir, chunk_size=settings.chunk_size)
    return PayloadDigest(app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genimage_devstack.s3server")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Credentials come from NANIO_ACCESS_KEY / NANIO_SECRET_KEY in the environment, never argv.
    app = build(args.data_dir, region=os.environ.get("NANIO_REGION", "us-east-1"))
    # Whatever is older than this process was left by a previous one (50 ms: the file clock is coarse).
    started = time.time() - 0.05

    def sweep() -> None:
        removed = sweep_staging(args.data_dir.resolve(), older_than=started)
        if removed:
            log.info("removed %d staging file(s) left by an interrupted upload", removed)

    threading.Thread(target=sweep, name="sweep-staging", daemon=True).start()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
