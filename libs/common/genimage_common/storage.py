"""Object storage through the S3 API (``minio`` client): keys, idempotent writes, presigned reads.

The minio client is synchronous; calls run in a worker thread so event loops never block.
Every call is bounded: connect and read timeouts and a few retries (``S3_CONNECT_TIMEOUT_S``,
``S3_READ_TIMEOUT_S``, ``S3_MAX_RETRIES``) instead of minio's defaults (5 minutes each, 5
retries: half an hour against a server that accepts connections and never answers, while a
job's heartbeat keeps it alive). A call that gives up raises urllib3's ``MaxRetryError``
(``redelivery.is_transient``: the job is retried later, not failed).
"""

from __future__ import annotations

import asyncio
import io
import os
from datetime import timedelta
from urllib.parse import urlsplit
from uuid import UUID

import certifi  # minio's own dependency: the CA bundle its default client uses
import urllib3
from minio import Minio
from minio.error import S3Error

from .settings import CommonSettings
from .telemetry import storage_span

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}


def output_key(user_id: UUID, generation_id: UUID, index: int, ext: str) -> str:
    return f"users/{user_id}/generations/{generation_id}/{index}.{ext}"


def thumbnail_key(user_id: UUID, generation_id: UUID, index: int) -> str:
    return f"users/{user_id}/generations/{generation_id}/{index}.thumb.webp"


def upload_key(user_id: UUID, upload_id: UUID, ext: str) -> str:
    return f"users/{user_id}/uploads/{upload_id}.{ext}"


# Connections kept per host (minio's default); calls beyond it wait for a free one.
POOL_SIZE = 10
# A readiness or dependency probe answers within seconds, whatever the call timeouts are, and
# does not keep a worker thread busy for a long read after its caller stopped waiting.
PROBE_READ_TIMEOUT_S = 5.0


def http_client(
    settings: CommonSettings, *, read_timeout_s: float | None = None, retries: int | None = None
) -> urllib3.PoolManager:
    """The HTTP client of a minio client: minio's defaults but for the bounds."""
    attempts = settings.s3_max_retries if retries is None else retries
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(
            connect=settings.s3_connect_timeout_s,
            read=settings.s3_read_timeout_s if read_timeout_s is None else read_timeout_s,
        ),
        maxsize=POOL_SIZE,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=attempts,
            # Connection refused or reset, timeouts and the server's 5xx; never a 4xx (the
            # request's own fault). PUT, GET, HEAD and DELETE of a key are idempotent.
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            # Give up with the error (MaxRetryError), not with the last 5xx response: minio
            # would read that as an S3 error of the request.
            raise_on_status=True,
        ),
    )


def _client(endpoint: str, settings: CommonSettings, http: urllib3.PoolManager | None = None) -> Minio:
    parts = urlsplit(endpoint)
    return Minio(
        parts.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=parts.scheme == "https",
        # A fixed region spares a GetBucketLocation round trip and lets presigning work offline.
        region=settings.s3_region,
        http_client=http or http_client(settings),
    )


class ObjectStore:
    def __init__(self, settings: CommonSettings) -> None:
        self.bucket = settings.s3_bucket
        self._client = _client(settings.s3_endpoint, settings)
        # Only signs URLs (the region is fixed): it never opens a connection.
        self._public = _client(settings.s3_public_endpoint or settings.s3_endpoint, settings)
        probe_read = min(settings.s3_read_timeout_s, PROBE_READ_TIMEOUT_S)
        self._probe = _client(
            settings.s3_endpoint, settings, http_client(settings, read_timeout_s=probe_read, retries=0)
        )

    async def ensure_bucket(self) -> None:
        def _ensure() -> None:
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:  # created concurrently by another process
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        with storage_span("EnsureBucket", bucket=self.bucket):
            await asyncio.to_thread(_ensure)

    async def ping(self) -> None:
        """Whether the store answers now: one try, a short read timeout."""
        await asyncio.to_thread(self._probe.bucket_exists, self.bucket)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Same key on retry: a repeated write replaces the object with identical bytes."""
        with storage_span("PutObject", bucket=self.bucket, key=key):
            await asyncio.to_thread(
                self._client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type
            )

    async def get(self, key: str) -> bytes:
        def _get() -> bytes:
            resp = self._client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        with storage_span("GetObject", bucket=self.bucket, key=key):
            return await asyncio.to_thread(_get)

    async def stat(self, key: str) -> int | None:
        """Size of the object, or None when it does not exist."""

        def _stat() -> int | None:
            try:
                return self._client.stat_object(self.bucket, key).size
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise

        with storage_span("HeadObject", bucket=self.bucket, key=key):
            return await asyncio.to_thread(_stat)

    async def delete(self, keys: list[str]) -> None:
        def _delete() -> None:
            for key in keys:
                self._client.remove_object(self.bucket, key)

        with storage_span("DeleteObjects", bucket=self.bucket) as span:
            span.set_attribute("genimage.objects", len(keys))
            await asyncio.to_thread(_delete)

    def presigned_get(self, key: str, *, expires_s: int = 300) -> str:
        return self._public.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))
