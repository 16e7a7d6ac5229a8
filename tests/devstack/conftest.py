"""Devstack fixtures: a disk S3 store server of the test's own, with the media bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genimage_devstack.processes import free_port
from genimage_devstack.s3 import DiskS3
from tests.devstack.s3client import BUCKET, client
from tests.marks import starts_infra


@pytest.fixture()
@starts_infra
def store(tmp_path: Path) -> Iterator[DiskS3]:
    s3 = DiskS3(tmp_path, port=free_port())
    s3.start()
    try:
        client(s3.url).make_bucket(BUCKET)
        yield s3
    finally:
        s3.stop()
