"""Fixtures of the generation tests: the worker as a process on its own NATS server (the e2e
stack's generation worker, on the shared one, would otherwise compete for the same jobs),
the session's S3, and fake provider servers in this process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams
from genimage_devstack.infra import Endpoints
from genimage_devstack.processes import free_port
from genimage_devstack.stack import ServiceProcess, launch
from tests.generation.bus import Bus
from tests.generation.fakes import KEYS, Fakes, catalog_toml
from tests.marks import out_of_process, starts_infra, starts_services
from tests.private_nats import private_nats_server

# Short enough that a killed worker's job comes back quickly, long enough for heartbeats.
ACK_WAIT_S = 3


@pytest.fixture(scope="session")
@starts_infra
def gen_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The private NATS server of the whole package (not of one module, as ``private_nats``):
    the session's worker lives on it."""
    with private_nats_server(tmp_path_factory.mktemp("generation-nats")) as server:
        yield server.url


@pytest.fixture(scope="session")
@out_of_process
def fakes() -> Iterator[Fakes]:
    servers = Fakes()
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def models_file(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("generation-models") / "models.toml"
    path.write_text(catalog_toml(fakes))
    return path


@pytest.fixture(scope="session")
def worker_env(infra: Endpoints, gen_nats: str, models_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        **infra.env(),
        "NATS_URL": gen_nats,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "INFO",
        "GENIMAGE_MODELS": str(models_file),
        "GENERATION_CONCURRENCY": "3",
        "GENERATION_ACK_WAIT_S": str(ACK_WAIT_S),
        "GENERATION_SHUTDOWN_GRACE_S": "2",
        "GENERATION_PROGRESS_INTERVAL_S": "0.05",
        "GENERATION_RETRY_ATTEMPTS": "3",
        "GENERATION_RETRY_BASE_S": "0.05",
        "GENERATION_RETRY_MAX_S": "0.2",
        "GENERATION_REDELIVERY_BACKOFF_S": "[0.2, 0.3]",
        "GENERATION_MAX_DELIVERIES": "3",
        **KEYS,
    }


@pytest.fixture(scope="session")
def store(infra: Endpoints) -> ObjectStore:
    return ObjectStore(
        CommonSettings(
            s3_endpoint=infra.s3_endpoint, s3_access_key=infra.s3_access_key, s3_secret_key=infra.s3_secret_key
        )
    )


@pytest.fixture(scope="session")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generation-logs")


def start_worker(env: dict[str, str], logs: Path, name: str = "generation") -> ServiceProcess:
    return launch([ServiceProcess("generation", free_port(), env, log_path=logs / f"{name}.log")])[0]


@pytest.fixture(scope="session")
@starts_services
def worker(worker_env: dict[str, str], worker_logs: Path) -> Iterator[ServiceProcess]:
    proc = start_worker(worker_env, worker_logs)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
async def bus(gen_nats: str, worker_env: dict[str, str]) -> AsyncIterator[Bus]:
    nc = await nats.connect(gen_nats)
    settings = CommonSettings(**{k.lower(): v for k, v in worker_env.items() if k.startswith(("STREAM_",))})
    await ensure_streams(nc.jetstream(), settings)
    try:
        yield Bus(nc)
    finally:
        await nc.close()
