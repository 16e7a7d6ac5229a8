"""The genimage stack on top of the infrastructure: streams, bucket, migrations, the four services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import nats

from genimage_common.settings import CommonSettings
from genimage_common.storage import ObjectStore
from genimage_common.streams import ensure_streams

from .infra import Endpoints
from .processes import LOOPBACK, Proc, wait_until

# Services that own a schema, migrated in this order.
MIGRATED = ("gateway", "billing", "gallery")
SERVICES = ("billing", "generation", "gallery", "gateway")
DEFAULT_PORTS = {"gateway": 8000, "billing": 8001, "generation": 8002, "gallery": 8003}


def service_env(endpoints: Endpoints, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment (``OTEL_*``, ``GENIMAGE_MODELS``... pass through) plus the endpoints."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **endpoints.env(), **(extra or {})}


async def _prepare_async(endpoints: Endpoints) -> None:
    settings = CommonSettings(**{k.lower(): v for k, v in endpoints.env().items()})
    nc = await nats.connect(endpoints.nats_url)
    try:
        await ensure_streams(nc.jetstream(), settings)
    finally:
        await nc.close()
    await ObjectStore(settings).ensure_bucket()


def prepare(endpoints: Endpoints, env: dict[str, str]) -> None:
    """Streams and bucket (idempotent), then each service's migrations."""
    asyncio.run(_prepare_async(endpoints))
    for name in MIGRATED:
        subprocess.run([sys.executable, "-m", name, "migrate"], env=env, check=True)


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path | None = None
    proc: Proc = field(init=False)

    def __post_init__(self) -> None:
        env = {**self.env, f"{self.name.upper()}_PORT": str(self.port)}
        self.proc = Proc(self.name, [sys.executable, "-m", self.name], env=env, log_path=self.log_path)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, *, stdout: int | None = None) -> subprocess.Popen[bytes]:
        return self.proc.start(stdout=stdout)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            timeout=timeout,
            what=f"service {self.name}",
            proc=self.proc.popen,
        )

    def stop(self) -> None:
        self.proc.stop()


def pump_prefixed(name: str, stream: IO[bytes], out: IO[str]) -> threading.Thread:
    """Copy a child's output line by line with a ``[name]`` prefix."""
    width = max(len(s) for s in SERVICES)

    def run() -> None:
        for line in iter(stream.readline, b""):
            out.write(f"[{name:<{width}}] {line.decode(errors='replace')}")
            out.flush()

    t = threading.Thread(target=run, name=f"log-{name}", daemon=True)
    t.start()
    return t


def launch(procs: list[ServiceProcess]) -> list[ServiceProcess]:
    """Start every process, then wait until each is ready; on any failure stop them all."""
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def start_services(
    env: dict[str, str], ports: dict[str, int], names: Iterable[str] = SERVICES, *, log_dir: Path | None = None
) -> list[ServiceProcess]:
    return launch(
        [ServiceProcess(n, ports[n], env, log_path=(log_dir / f"{n}.log") if log_dir else None) for n in names]
    )
