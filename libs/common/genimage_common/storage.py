"""Object storage through the S3 API (``minio`` client): keys, idempotent writes, presigned reads.

The minio client is synchronous; calls run in a worker thread so event loops never block.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from urllib.parse import urlsplit
from uuid import UUID

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


def _client(endpoint: str, settings: CommonSettings) -> Minio:
    parts = urlsplit(endpoint)
    return Minio(
        parts.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=parts.scheme == "https",
        # A fixed region spares a GetBucketLocation round trip and lets presigning work offline.
        region=settings.s3_region,
    )


class ObjectStore:
    def __init__(self, settings: CommonSettings) -> None:
        self.bucket = settings.s3_bucket
        self._client = _client(settings.s3_endpoint, settings)
        self._public = _client(settings.s3_public_endpoint or settings.s3_endpoint, settings)

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
        await asyncio.to_thread(self._client.bucket_exists, self.bucket)

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
