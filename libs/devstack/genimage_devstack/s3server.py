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
  signature over the claimed hash, never the hash against the body), and an UploadPart body that
  does not match its ``Content-MD5`` too (nanio checks that header on PutObject only).

Multipart uploads (what the ``minio`` client does above 5 MiB: a video) keep the same promises
through ``DurableMultipart``, the manager nanio's multipart handlers are pointed at:

- CompleteMultipartUpload is answered only after the directories of the object and its sidecar
  are fsynced (UploadPart after its checksum and folders), and a ``.json.tmp`` a kill left no
  longer fails it with 500 after the rename;
- a part re-uploaded over an acknowledged one is never assembled under the old part's checksum
  (nanio renames the part, then writes its ``.md5``: a kill in between paired new bytes with the
  old checksum), and two uploads of one part number no longer write into one staging file;
- a Complete cut off by a kill leaves the previous version (or nothing) served, never the half
  assembled file; its scratch file is swept in the background, and the upload itself stays
  completable. Uploads idle for ``--abandoned-upload-age`` are removed by the same background
  sweep (nanio keeps them for ever unless started with a 7-day GC flag).

Start time does not depend on the data: nothing is scanned before the port opens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import mimetypes
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

import nanio.handlers.multipart as multipart_handlers
import uvicorn
from nanio.app import build_app
from nanio.auth.credentials import EnvCredentialResolver
from nanio.config import Settings
from nanio.errors import BadDigest, InvalidObjectName, NoSuchKey, NoSuchUpload, S3Error
from nanio.etag import StreamingMd5
from nanio.storage.backend import ObjectInfo
from nanio.storage.filesystem import FilesystemStorage
from nanio.storage.metadata import write_metadata
from nanio.storage.multipart import MultipartInit, MultipartManager, PartInfo
from nanio.storage.paths import (
    META_DIR_NAME,
    metadata_path,
    multipart_part_md5_path,
    multipart_root,
    object_path,
)

log = logging.getLogger("genimage.s3server")

# nanio stages an upload as ``.tmp.<uuid hex>`` in the object's own folder, then renames it.
STAGING_PREFIX = ".tmp."
# nanio assembles a CompleteMultipartUpload into ``assembled.<hex>.tmp`` inside the upload's folder.
ASSEMBLY_PREFIX, ASSEMBLY_SUFFIX = "assembled.", ".tmp"
HEALTH_PATH = "/-/healthz"  # no bucket name may start with "-", so this never shadows a bucket
# An upload nobody wrote to for this long is abandoned: our clients never resume an upload across
# put_object calls, and urllib3 retries a part within seconds (MinIO's default is 24 h, scanned every 6 h).
ABANDONED_UPLOAD_AGE_S = 3600.0
UPLOAD_SWEEP_INTERVAL_S = 600.0
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_staging(key: str) -> bool:
    return any(part.startswith(STAGING_PREFIX) for part in key.split("/"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_parents(root: Path, *leaves: Path) -> None:
    """fsync each leaf directory and its parents up to ``root``: a rename, and any folder created for
    it, are entries in their parent directories, which only an fsync of those makes survive a crash
    of the machine."""
    done: set[Path] = set()
    for leaf in leaves:
        d = leaf
        while d not in done and (d == root or root in d.parents):
            fsync_dir(d)
            done.add(d)
            d = d.parent


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
        await asyncio.to_thread(sync_parents, self.data_dir, final.parent, meta.parent)
        return info

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


class DurableMultipart(MultipartManager):
    """nanio's multipart manager with the promises of ``DurableStorage``. nanio builds one per
    request (``build`` points its handlers here), so what must be shared lives on the class."""

    # One writer per (upload, part number): nanio stages every upload of a part in the same
    # ``<n>.bin.tmp``, opened without O_EXCL, so two at once (a client retry while the first is still
    # arriving) write into one file, and the first rename publishes bytes mixed from both under the
    # checksum of one. Per process, which holds with the single worker this server runs.
    _part_writers: ClassVar[dict[tuple[str, int], tuple[asyncio.Lock, int]]] = {}

    def create(self, init: MultipartInit) -> str:
        if is_staging(init.key):
            raise InvalidObjectName(f"key segments starting with {STAGING_PREFIX!r} are reserved")
        return super().create(init)

    async def upload_part(self, upload_id: str, part_number: int, body: AsyncIterator[bytes]) -> PartInfo:
        slot = (upload_id, part_number)
        lock, users = self._part_writers.get(slot, (asyncio.Lock(), 0))
        self._part_writers[slot] = (lock, users + 1)
        try:
            async with lock:
                info = await super().upload_part(
                    upload_id, part_number, self._retire_checksum_once_received(upload_id, part_number, body)
                )
                try:
                    await asyncio.to_thread(self._persist_part, upload_id, part_number)
                except FileNotFoundError:  # completed or aborted meanwhile
                    raise NoSuchUpload(resource=upload_id) from None
                return info
        finally:
            lock, users = self._part_writers[slot]
            if users == 1:
                del self._part_writers[slot]
            else:
                self._part_writers[slot] = (lock, users - 1)

    async def _retire_checksum_once_received(
        self, upload_id: str, part_number: int, body: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        async for chunk in body:
            yield chunk
        # The whole body is in and its signed hash checked; what follows in nanio runs without an
        # await: rename of the new part over the old, then its ``.md5``. Dropping the old checksum
        # first turns a kill in between into a part without checksum, which Complete refuses
        # (InvalidPart), instead of new bytes under the acknowledged part's checksum, which Complete
        # would assemble as if they were that part. A body cut short never gets here: the old part stays.
        multipart_part_md5_path(self._data_dir, upload_id, part_number).unlink(missing_ok=True)

    def _persist_part(self, upload_id: str, part_number: int) -> None:
        """nanio fsyncs the part's bytes, not its checksum nor any directory entry: make an
        acknowledged part, and the upload it belongs to, survive a crash of the machine."""
        checksum = multipart_part_md5_path(self._data_dir, upload_id, part_number)
        fd = os.open(checksum, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sync_parents(self._data_dir, checksum.parent)

    def complete(self, upload_id: str, client_parts: Iterable[tuple[int, str]]) -> ObjectInfo:
        init = self.load_init(upload_id)
        if is_staging(init.key):
            raise InvalidObjectName(f"key segments starting with {STAGING_PREFIX!r} are reserved")
        final = object_path(self._data_dir, init.bucket, init.key)
        meta = metadata_path(self._data_dir, init.bucket, init.key)
        # nanio's complete is synchronous on the event loop, sidecar write included, as every other
        # sidecar write: a ``.json.tmp`` present now was left by a killed server. Left there, it fails
        # the sidecar write with 500 after the object was already renamed into place.
        meta.with_name(meta.name + ".tmp").unlink(missing_ok=True)
        # Assembles into a scratch file, fsyncs it, renames it over the key, writes the sidecar.
        # A kill before the rename leaves the previous version served; after it, the whole new
        # object (a stale sidecar is rebuilt on read). The upload stays completable until its
        # folder is removed, last.
        info = super().complete(upload_id, client_parts)
        # Before the answer, as for a PUT. On the loop, as nanio's complete itself: a few fsyncs.
        sync_parents(self._data_dir, final.parent, meta.parent)
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


def sweep_uploads(data_dir: Path, *, idle_for: float, scratch_before: float) -> tuple[int, int]:
    """Remove what interrupted multipart uploads leave under ``.nanio/multipart``: the scratch file of
    a Complete cut off by a kill (older than ``scratch_before``, this process's start: its writer is
    gone; it is as big as the object), and every upload nobody wrote to for ``idle_for`` seconds
    (with its parts). An upload from before a restart stays until then, so a client that retries a
    part or the Complete against the restarted store still finds it. Returns (scratch files, uploads)."""
    now = time.time()
    root = multipart_root(data_dir)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0, 0
    scratch = uploads = 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        upload = Path(entry.path)
        try:
            # Files only: removing a scratch file changes the folder's mtime, and is no activity.
            newest = 0.0
            for dirpath, _dirnames, filenames in os.walk(upload):
                for name in filenames:
                    path = Path(dirpath) / name
                    mtime = path.stat(follow_symlinks=False).st_mtime
                    dead = name.startswith(ASSEMBLY_PREFIX) and name.endswith(ASSEMBLY_SUFFIX)
                    if dead and mtime < scratch_before:
                        path.unlink()
                        scratch += 1
                    else:
                        newest = max(newest, mtime)
            # A folder a kill left without init.json (or emptied) ages from its own mtime.
            newest = newest or upload.stat(follow_symlinks=False).st_mtime
            if now - newest > idle_for:
                shutil.rmtree(upload)
                uploads += 1
        except FileNotFoundError:  # completed or aborted meanwhile
            continue
        except OSError as exc:
            log.warning("could not sweep multipart upload %s: %s", entry.name, exc)
    return scratch, uploads


def _is_upload_part(scope: Mapping[str, Any]) -> bool:
    if scope["method"] != "PUT":
        return False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return "uploadId" in query and "partNumber" in query


class PayloadDigest:
    """ASGI wrapper: checks a body against its signed ``x-amz-content-sha256`` (PUT, UploadPart, the
    parts list of a Complete), an UploadPart body against its ``Content-MD5``, and answers the
    launcher's health probe without credentials."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        claimed = headers.get(b"x-amz-content-sha256", b"").decode("latin-1")
        # UNSIGNED-PAYLOAD has nothing to check; streaming chunks are verified by nanio, and the
        # bytes seen here are the chunk framing, which Content-MD5 does not cover either.
        sha256 = hashlib.sha256() if _SHA256_HEX.fullmatch(claimed) else None
        md5_claimed = headers.get(b"content-md5") if _is_upload_part(scope) else None
        md5 = hashlib.md5(usedforsecurity=False) if md5_claimed and not claimed.startswith("STREAMING-") else None
        if sha256 is None and md5 is None:
            await self.app(scope, receive, send)
            return

        async def checked_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                for digest in (sha256, md5):
                    if digest is not None:
                        digest.update(body)
                # Raised inside nanio's body loop, which then drops its staging file.
                if not message.get("more_body"):
                    if sha256 is not None and sha256.hexdigest() != claimed:
                        raise XAmzContentSHA256Mismatch()
                    if md5 is not None and base64.b64encode(md5.digest()) != (md5_claimed or b"").strip():
                        raise BadDigest()
            return message

        await self.app(scope, checked_receive, send)


def build(data_dir: Path, *, region: str = "us-east-1") -> PayloadDigest:
    settings = Settings(
        data_dir=data_dir.resolve(), region=region, credentials=EnvCredentialResolver(), access_log=False
    )
    app = build_app(settings)
    app.state.storage = DurableStorage(settings.data_dir, chunk_size=settings.chunk_size)
    _serve_multipart_with(DurableMultipart)
    return PayloadDigest(app)


def _serve_multipart_with(manager: type[MultipartManager]) -> None:
    """nanio's multipart handlers build ``MultipartManager`` by its module-level name, per request;
    there is no setting for it. Refuse to start rather than silently serve nanio's own manager
    should a nanio release move that name (hence the ``<0.2`` pin)."""
    installed = getattr(multipart_handlers, "MultipartManager", None)
    if installed is not MultipartManager and installed is not manager:
        raise RuntimeError(
            f"nanio's multipart handlers no longer build {MultipartManager.__qualname__}: found {installed!r}"
        )
    multipart_handlers.MultipartManager = manager  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genimage_devstack.s3server")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--abandoned-upload-age",
        type=float,
        default=ABANDONED_UPLOAD_AGE_S,
        help="seconds without a write after which a multipart upload is removed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Credentials come from NANIO_ACCESS_KEY / NANIO_SECRET_KEY in the environment, never argv.
    app = build(args.data_dir, region=os.environ.get("NANIO_REGION", "us-east-1"))
    # Whatever is older than this process was left by a previous one (50 ms: the file clock is coarse).
    started = time.time() - 0.05
    data_dir = args.data_dir.resolve()

    def sweep() -> None:
        removed = sweep_staging(data_dir, older_than=started)
        if removed:
            log.info("removed %d staging file(s) left by an interrupted upload", removed)
        # Uploads are abandoned while the store runs too (a client that died between parts).
        while True:
            try:
                scratch, uploads = sweep_uploads(data_dir, idle_for=args.abandoned_upload_age, scratch_before=started)
            except Exception:  # the next round may do better; this thread must not die of it
                log.exception("sweeping multipart uploads failed")
            else:
                if scratch:
                    log.info("removed %d half-assembled object(s) left by an interrupted Complete", scratch)
                if uploads:
                    log.info("removed %d multipart upload(s) idle for over %.0fs", uploads, args.abandoned_upload_age)
            time.sleep(UPLOAD_SWEEP_INTERVAL_S)

    threading.Thread(target=sweep, name="sweep-leftovers", daemon=True).start()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
