"""Multipart uploads on the disk S3 store (ADR 4), as the ``minio`` client makes them for objects
over 5 MiB (a video): an acknowledged CompleteMultipartUpload survives kill -9; a kill mid-upload
or mid-completion never serves a partial object; what such a kill leaves is swept in the
background; parts are checked against their signed hash and their Content-MD5.

Kills at a precise point inside a Complete or an UploadPart come from ``s3_crashpoint.py``: the
same server process, which SIGKILLs itself when it gets there."""

from __future__ import annotations

import base64
import hashlib
import os
import select
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error
from nanio.storage.multipart import MultipartInit

from genimage_devstack import s3server
from genimage_devstack.s3 import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DiskS3
from tests.aio import run_sync
from tests.devstack.s3client import BUCKET, client, get, listed, put
from tests.polling import eventually

MiB = 2**20
VIDEO = "users/u/generations/g/0.mp4"
CRASHPOINT = Path(__file__).with_name("s3_crashpoint.py")
# What the client sees when the server dies under its request (no retries in these tests).
CONNECTION_LOST = (urllib3.exceptions.HTTPError, OSError)


def uploads_dir(store: DiskS3) -> Path:
    return store.root / ".nanio" / "multipart"


def scratch_files(store: DiskS3) -> list[Path]:
    return sorted(uploads_dir(store).glob("*/assembled.*.tmp"))


def restart_with_crash_at(store: DiskS3, point: str) -> None:
    """Restart ``store`` under the crash harness; the next ``start()`` is the plain server again."""
    store.stop()
    plain = store.proc.argv
    assert plain[1:3] == ["-m", "genimage_devstack.s3server"]
    store.proc.argv = [sys.executable, str(CRASHPOINT), "--crash-at", point, *plain[3:]]
    try:
        store.start()
    finally:
        store.proc.argv = plain


def assert_killed_at_crash_point(store: DiskS3) -> None:
    eventually(lambda: store.proc.returncode is not None, timeout=10, what="server killed")
    assert store.proc.returncode == -signal.SIGKILL  # the crash point was reached, not some other failure


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def the_upload(c: Minio, key: str) -> tuple[str, list[Part]]:
    (upload,) = [u for u in c._list_multipart_uploads(BUCKET).uploads if u.object_name == key]
    return upload.upload_id, c._list_parts(BUCKET, key, upload.upload_id).parts


def open_put(url: str, *, total: int) -> socket.socket:
    """A presigned PUT whose body is sent by the caller."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {total}\r\n\r\n"
    sock.sendall(head.encode())
    return sock


def status_of(sock: socket.socket, *, timeout: float) -> int | None:
    """The status of the answer on ``sock``, or None when none came within ``timeout``."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    sock.settimeout(10)
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {head!r}")
        head += chunk
    return int(head.split(b" ", 2)[1])


def presigned_part(c: Minio, key: str, upload_id: str, part_number: int) -> str:
    return c.get_presigned_url(
        "PUT",
        BUCKET,
        key,
        expires=timedelta(minutes=5),
        extra_query_params={"uploadId": upload_id, "partNumber": str(part_number)},
    )


@pytest.mark.timeout(180)
def test_acknowledged_multipart_uploads_survive_kill_9(store: DiskS3) -> None:
    c = client(store.url)
    videos = {f"users/u/generations/g{i}/0.mp4": os.urandom(12 * MiB) for i in range(3)}
    same = [os.urandom(11 * MiB), os.urandom(13 * MiB)]  # one key, concurrently; sizes tell them apart
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda kv: put(c, kv[0], kv[1], "video/mp4"), videos.items()))
        list(pool.map(lambda d: put(c, "users/u/generations/same/0.mp4", d, "video/mp4"), same))
    for key in videos:
        assert c.stat_object(BUCKET, key).etag.endswith("-3")  # went through CompleteMultipartUpload
    store.kill()  # right after the last acknowledgement
    store.start()
    c = client(store.url)
    for key, data in videos.items():
        assert get(c, key) == data
        stat = c.stat_object(BUCKET, key)
        assert (stat.size, stat.content_type) == (len(data), "video/mp4")
    final = get(c, "users/u/generations/same/0.mp4")
    assert final in same
    assert c.stat_object(BUCKET, "users/u/generations/same/0.mp4").size == len(final)
    assert listed(c, "users/") == sorted([*videos, "users/u/generations/same/0.mp4"])
    assert list(uploads_dir(store).iterdir()) == []  # nothing of the uploads is left


def test_part_and_complete_fsync_their_directories_before_they_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = (tmp_path / "s3").resolve()
    s3server.DurableStorage(root).create_bucket(BUCKET)
    manager = s3server.DurableMultipart(root)
    upload_id = manager.create(MultipartInit(bucket=BUCKET, key="users/u/v.mp4", content_type="video/mp4"))
    synced: list[Path] = []
    fsync_dir = s3server.fsync_dir
    monkeypatch.setattr(s3server, "fsync_dir", lambda d: (synced.append(d), fsync_dir(d)))

    async def body() -> AsyncIterator[bytes]:
        yield b"video bytes"

    part = run_sync(manager.upload_part(upload_id, 1, body()))
    upload = root / ".nanio" / "multipart" / upload_id
    assert set(synced) == {upload / "parts", upload, upload.parent, upload.parent.parent, root}
    synced.clear()
    manager.complete(upload_id, [(1, part.etag)])
    bucket = root / BUCKET
    assert set(synced) == {
        bucket / "users/u",
        bucket / "users",
        bucket / ".nanio-meta/users/u",
        bucket / ".nanio-meta/users",
        bucket / ".nanio-meta",
        bucket,
        root,
    }
    assert (bucket / "users/u/v.mp4").read_bytes() == b"video bytes"


@pytest.mark.timeout(120)
def test_a_completion_cut_off_mid_assembly_serves_the_previous_version(store: DiskS3) -> None:
    c = client(store.url)
    v1 = os.urandom(1000)
    put(c, VIDEO, v1, "video/mp4")
    restart_with_crash_at(store, "assembly")
    v2 = os.urandom(12 * MiB)
    with pytest.raises(CONNECTION_LOST):
        put(client(store.url), VIDEO, v2, "video/mp4")
    assert_killed_at_crash_point(store)
    (scratch,) = scratch_files(store)
    assert scratch.stat().st_size == 5 * MiB  # half an object was on disk when the server died

    store.start()
    c = client(store.url)
    assert get(c, VIDEO) == v1
    assert c.stat_object(BUCKET, VIDEO).size == len(v1)
    assert listed(c, "users/") == [VIDEO]
    eventually(lambda: not scratch_files(store), timeout=10, what="half-assembled object swept")
    # The upload outlived the kill: the client can complete it again, and gets the whole object.
    upload_id, parts = the_upload(c, VIDEO)
    assert [p.part_number for p in parts] == [1, 2, 3]
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, parts)
    assert get(c, VIDEO) == v2
    stat = c.stat_object(BUCKET, VIDEO)
    assert (stat.size, stat.content_type, stat.etag.endswith("-3")) == (len(v2), "video/mp4", True)
    assert list(uploads_dir(store).iterdir()) == []


@pytest.mark.timeout(120)
def test_a_completion_cut_off_before_its_sidecar_serves_the_whole_new_object(store: DiskS3) -> None:
    c = client(store.url)
    put(c, VIDEO, os.urandom(1000), "video/mp4")
    restart_with_crash_at(store, "sidecar")
    v2 = os.urandom(12 * MiB)
    with pytest.raises(CONNECTION_LOST):
        put(client(store.url), VIDEO, v2, "video/mp4")
    assert_killed_at_crash_point(store)
    sidecar = store.root / BUCKET / ".nanio-meta" / (VIDEO + ".json")
    assert (store.root / BUCKET / VIDEO).stat().st_size == len(v2)  # renamed into place
    assert b'"size":1000' in sidecar.read_bytes()  # still describes the previous version
    assert sidecar.with_name(sidecar.name + ".tmp").exists()  # and a sidecar write cut short

    store.start()
    c = client(store.url)
    assert c.stat_object(BUCKET, VIDEO).size == len(v2)  # nanio alone: 1000, a truncated answer
    assert get(c, VIDEO) == v2
    # Completing the same upload again restores what the sidecar had to say.
    upload_id, parts = the_upload(c, VIDEO)
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, parts)
    stat = c.stat_object(BUCKET, VIDEO)
    assert (stat.size, stat.content_type, stat.etag.endswith("-3")) == (len(v2), "video/mp4", True)
    assert get(c, VIDEO) == v2


@pytest.mark.timeout(60)
def test_a_sidecar_temp_left_by_a_kill_does_not_fail_a_multipart_upload(store: DiskS3) -> None:
    sidecar = store.root / BUCKET / ".nanio-meta" / (VIDEO + ".json")
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.with_name(sidecar.name + ".tmp").write_bytes(b'{"half')
    c = client(store.url)
    data = os.urandom(12 * MiB)
    put(c, VIDEO, data, "video/mp4")  # nanio alone: 500 once the object is already renamed in
    stat = c.stat_object(BUCKET, VIDEO)
    assert (stat.size, stat.content_type, stat.etag.endswith("-3")) == (len(data), "video/mp4", True)
    assert get(c, VIDEO) == data


@pytest.mark.timeout(120)
def test_a_part_replaced_as_the_server_dies_is_never_assembled_under_the_old_checksum(store: DiskS3) -> None:
    restart_with_crash_at(store, "part-checksum:2")
    c = client(store.url)
    first, second = os.urandom(MiB), os.urandom(MiB)
    upload_id = c._create_multipart_upload(BUCKET, VIDEO, {"Content-Type": "video/mp4"})
    acknowledged = c._upload_part(BUCKET, VIDEO, first, None, upload_id, 1)
    with pytest.raises(CONNECTION_LOST):  # the same part again, other bytes: dies before their .md5
        c._upload_part(BUCKET, VIDEO, second, None, upload_id, 1)
    assert_killed_at_crash_point(store)

    store.start()
    c = client(store.url)
    # The part on disk is `second`; nanio alone still had `first`'s checksum beside it and
    # assembled `second` as the object the client had acknowledged as `first`.
    with pytest.raises(S3Error) as refused:
        c._complete_multipart_upload(BUCKET, VIDEO, upload_id, [Part(1, acknowledged)])
    assert refused.value.code == "InvalidPart"
    with pytest.raises(S3Error):
        c.stat_object(BUCKET, VIDEO)
    # Sending the part again is what the client does next.
    etag = c._upload_part(BUCKET, VIDEO, second, None, upload_id, 1)
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, [Part(1, etag)])
    assert get(c, VIDEO) == second


@pytest.mark.timeout(120)
def test_two_uploads_of_one_part_at_once_never_mix(store: DiskS3) -> None:
    c = client(store.url)
    upload_id = c._create_multipart_upload(BUCKET, VIDEO, {"Content-Type": "video/mp4"})
    url = presigned_part(c, VIDEO, upload_id, 1)
    a, b = os.urandom(4 * MiB), os.urandom(4 * MiB)
    staged = uploads_dir(store) / upload_id / "parts" / "000001.bin.tmp"
    sock_a = open_put(url, total=len(a))
    sock_b = None
    # B is sent from a thread: a server that makes it wait stops reading it, and sendall blocks.
    sender = ThreadPoolExecutor(1)
    try:
        sock_a.sendall(a[: len(a) // 2])
        eventually(lambda: staged.exists() and staged.stat().st_size > 0, timeout=10, what="first upload staged")
        # A retry of the same part while the first is still arriving.
        sock_b = open_put(url, total=len(b))
        sent_b = sender.submit(sock_b.sendall, b)
        # nanio alone takes `b` at once, into the file `a` is still being written to.
        early_b = status_of(sock_b, timeout=2)
        sock_a.sendall(a[len(a) // 2 :])
        assert status_of(sock_a, timeout=30) == 200
        sent_b.result(timeout=30)
        assert (early_b or status_of(sock_b, timeout=30)) == 200
    finally:
        sock_a.close()
        if sock_b is not None:
            sock_b.close()  # also ends a sendall still blocked in the thread
        sender.shutdown()
    _, parts = the_upload(c, VIDEO)
    assert [(p.part_number, p.etag) for p in parts] == [(1, md5_hex(b))]  # the last one wins, whole
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, parts)
    assert get(c, VIDEO) == b


def _signed(method: str, url: str, *, signed: bytes, sent: bytes, headers: dict[str, str]) -> httpx.Response:
    """A request signed with SigV4 over ``signed`` (its x-amz-content-sha256) that sends ``sent``."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method, url, data=signed, headers={"x-amz-content-sha256": hashlib.sha256(signed).hexdigest(), **headers}
    )
    S3SigV4Auth(Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY), "s3", "us-east-1").add_auth(req)
    return httpx.request(method, str(req.url), content=sent, headers=dict(req.headers.items()), timeout=30)


def _signed_part(store: DiskS3, upload_id: str, *, signed: bytes, sent: bytes, md5_of: bytes) -> httpx.Response:
    return _signed(
        "PUT",
        f"{store.url}/{BUCKET}/{VIDEO}?partNumber=1&uploadId={upload_id}",
        signed=signed,
        sent=sent,
        headers={"Content-MD5": base64.b64encode(hashlib.md5(md5_of).digest()).decode()},
    )


def _parts_list(parts: list[tuple[int, str]]) -> bytes:
    listed = "".join(f'<Part><PartNumber>{n}</PartNumber><ETag>"{etag}"</ETag></Part>' for n, etag in parts)
    return f"<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>".encode()


@pytest.mark.timeout(60)
def test_a_part_that_does_not_match_its_signed_hash_or_its_md5_is_refused(store: DiskS3) -> None:
    c = client(store.url)
    good, bad = os.urandom(MiB), os.urandom(MiB)
    upload_id = c._create_multipart_upload(BUCKET, VIDEO, {"Content-Type": "video/mp4"})
    etag = c._upload_part(BUCKET, VIDEO, good, None, upload_id, 1)

    swapped = _signed_part(store, upload_id, signed=good, sent=bad, md5_of=good)
    assert swapped.status_code == 400
    assert b"XAmzContentSHA256Mismatch" in swapped.content
    wrong_md5 = _signed_part(store, upload_id, signed=bad, sent=bad, md5_of=good)
    assert wrong_md5.status_code == 400
    assert b"BadDigest" in wrong_md5.content
    assert _signed_part(store, upload_id, signed=bad, sent=bad, md5_of=bad).status_code == 200

    # The refused bodies never replaced the part; the accepted one did.
    _, parts = the_upload(c, VIDEO)
    assert [p.etag for p in parts] == [md5_hex(bad)]
    with pytest.raises(S3Error):
        c._complete_multipart_upload(BUCKET, VIDEO, upload_id, [Part(1, etag)])
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, parts)
    assert get(c, VIDEO) == bad


@pytest.mark.timeout(60)
def test_a_refused_part_or_parts_list_leaves_the_upload_as_acknowledged(store: DiskS3) -> None:
    c = client(store.url)
    first, second = os.urandom(MiB), os.urandom(MiB)
    upload_id = c._create_multipart_upload(BUCKET, VIDEO, {"Content-Type": "video/mp4"})
    etags = [(1, c._upload_part(BUCKET, VIDEO, first, None, upload_id, 1))]
    etags.append((2, c._upload_part(BUCKET, VIDEO, second, None, upload_id, 2)))
    swapped = _signed_part(store, upload_id, signed=first, sent=os.urandom(MiB), md5_of=first)
    assert swapped.status_code == 400
    # A Complete whose parts list is not the one signed (here: the object cut to its first part).
    url = f"{store.url}/{BUCKET}/{VIDEO}?uploadId={upload_id}"
    cut = _signed("POST", url, signed=_parts_list(etags), sent=_parts_list(etags[:1]), headers={})
    assert cut.status_code == 400
    assert b"XAmzContentSHA256Mismatch" in cut.content
    with pytest.raises(S3Error):
        c.stat_object(BUCKET, VIDEO)
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, [Part(n, etag) for n, etag in etags])
    assert get(c, VIDEO) == first + second


@pytest.mark.timeout(120)
def test_a_kill_mid_upload_serves_nothing_and_abandoned_uploads_are_swept(store: DiskS3) -> None:
    c = client(store.url)
    first = os.urandom(5 * MiB)
    upload_id = c._create_multipart_upload(BUCKET, VIDEO, {"Content-Type": "video/mp4"})
    etag1 = c._upload_part(BUCKET, VIDEO, first, None, upload_id, 1)
    staged = uploads_dir(store) / upload_id / "parts" / "000002.bin.tmp"
    sock = open_put(presigned_part(c, VIDEO, upload_id, 2), total=5 * MiB)
    sock.sendall(os.urandom(MiB))
    eventually(lambda: staged.exists() and staged.stat().st_size > 0, timeout=10, what="part 2 staged")
    store.kill()
    sock.close()

    store.start()
    c = client(store.url)
    with pytest.raises(S3Error) as missing:
        c.stat_object(BUCKET, VIDEO)
    assert missing.value.code in ("NoSuchKey", "NotFound")
    assert listed(c, "users/") == []
    # An upload from before the restart is still there for a client that carries on with it.
    second = os.urandom(MiB)
    etag2 = c._upload_part(BUCKET, VIDEO, second, None, upload_id, 2)
    c._complete_multipart_upload(BUCKET, VIDEO, upload_id, [Part(1, etag1), Part(2, etag2)])
    assert get(c, VIDEO) == first + second

    # One upload nobody touched for two hours, one in progress: the first goes, in the background.
    abandoned = c._create_multipart_upload(BUCKET, "users/u/a.mp4", {})
    c._upload_part(BUCKET, "users/u/a.mp4", os.urandom(MiB), None, abandoned, 1)
    active = c._create_multipart_upload(BUCKET, "users/u/b.mp4", {})
    c._upload_part(BUCKET, "users/u/b.mp4", os.urandom(MiB), None, active, 1)
    two_hours_ago = time.time() - 2 * 3600
    for dirpath, _, filenames in os.walk(uploads_dir(store) / abandoned):
        for path in [Path(dirpath), *(Path(dirpath) / f for f in filenames)]:
            os.utime(path, (two_hours_ago, two_hours_ago))
    store.stop()
    store.start()
    eventually(lambda: not (uploads_dir(store) / abandoned).exists(), timeout=10, what="abandoned upload swept")
    assert (uploads_dir(store) / active).is_dir()
    assert [u.upload_id for u in client(store.url)._list_multipart_uploads(BUCKET).uploads] == [active]


@pytest.mark.timeout(60)
def test_a_multipart_upload_cannot_take_a_staging_name(store: DiskS3) -> None:
    with pytest.raises(S3Error) as refused:
        client(store.url)._create_multipart_upload(BUCKET, "users/u/.tmp.0123abcd", {})
    assert refused.value.code == "InvalidObjectName"
