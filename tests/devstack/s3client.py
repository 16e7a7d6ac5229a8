"""Talking to a disk S3 store from a test: a minio client and the media bucket's objects."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import urllib3
from minio import Minio

from genimage_devstack.s3 import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

BUCKET = "genimage-media"
POOL = urllib3.PoolManager(maxsize=64, timeout=urllib3.Timeout(connect=5, read=60), retries=False)


def client(url: str, *, access: str = DEFAULT_ACCESS_KEY, secret: str = DEFAULT_SECRET_KEY) -> Minio:
    return Minio(
        urlsplit(url).netloc, access_key=access, secret_key=secret, secure=False, region="us-east-1", http_client=POOL
    )


def put(c: Minio, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    c.put_object(BUCKET, key, io.BytesIO(data), len(data), content_type=content_type)


def get(c: Minio, key: str) -> bytes:
    resp = c.get_object(BUCKET, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def listed(c: Minio, prefix: str) -> list[str]:
    return sorted(str(o.object_name) for o in c.list_objects(BUCKET, prefix=prefix, recursive=True))
