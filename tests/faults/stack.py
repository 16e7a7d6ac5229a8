"""A private genimage stack for fault injection: its own data directory, free ports, infrastructure
started through ``Infra`` exactly as ``make run`` starts it (durable PostgreSQL, the same S3
store), and the four services under the same ``Supervisor`` as ``make run``.

Nothing here is shared with the session fixtures: the faults kill NATS, PostgreSQL and S3.
Every process is started and stopped by this object, by PID, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from genimage_devstack.infra import Endpoints, Infra, Ports
from genimage_devstack.processes import free_port, wait_until
from genimage_devstack.stack import SERVICES, ServiceProcess, prepare, service_env
from genimage_devstack.supervisor import Backoff, Supervisor

SIGNUP_GRANT = 1_000_000
# Shorter than make run's defaults only where the defaults would make each recovery take
# minutes of CI time; the recovery mechanism is the same.
FAULT_ENV = {
    "LOG_LEVEL": "INFO",
    # Every user starts rich enough for the whole run: no admin top-ups to interleave.
    "PRICING_SIGNUP_GRANT": str(SIGNUP_GRANT),
    # A job of a killed worker comes back after ack_wait (default 30 s).
    "GENERATION_ACK_WAIT_S": "10",
    "GATEWAY_MAX_INFLIGHT_GENERATIONS": "200",
    # A request cut off by a fault can leave its Idempotency-Key claimed; retries get 409 until
    # the lease (default 120 s) passes.
    "GATEWAY_IDEMPOTENCY_LEASE_S": "15",
}
# The restart policy of make run, scaled down so a killed service is back within seconds.
FAULT_BACKOFF = Backoff(initial_s=0.5, factor=2.0, max_s=5.0, reset_after_s=20.0)
INFRA = ("nats", "postgres", "s3")


@dataclass
class FaultStack:
    extra_env: dict[str, str] = field(default_factory=dict)
    backoff: Backoff = FAULT_BACKOFF
    keep_logs: Path | None = None  # copy the logs there on stop
    data_dir: Path = field(init=False)
    infra: Infra = field(init=False)
    endpoints: Endpoints = field(init=False)
    env: dict[str, str] = field(init=False)
    supervisor: Supervisor = field(init=False)

    def start(self) -> FaultStack:
        # Not under pytest's basetemp: PostgreSQL runs as its own user and must reach it (ADR 1).
        self.data_dir = Path(tempfile.mkdtemp(prefix="genimage-faults-"))
        # Only what we start: an outer NATS_URL/DATABASE_URL/S3_ENDPOINT is not used.
        environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT")}
        environ.pop("GENIMAGE_INFRA", None)
        environ.pop("GENIMAGE_S3_STORE", None)  # the store `make run` uses by default
        # for_tests=False: the durable settings and the S3 store of `make run`.
        self.infra = Infra(self.data_dir, Ports.free(), for_tests=False, environ=environ)
        try:
            self.endpoints = self.infra.start()
            self.env = service_env(self.endpoints, {**FAULT_ENV, **self.extra_env})
            prepare(self.endpoints, self.env)
            logs = self.data_dir / "logs"
            services = [ServiceProcess(n, free_port(), self.env, log_path=logs / f"{n}.log") for n in SERVICES]
            self.supervisor = Supervisor(services, backoff=self.backoff)
            self.supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            if hasattr(self, "supervisor"):
                self.supervisor.stop()
        finally:
            try:
                self.infra.stop()
            finally:
                if self.keep_logs is not None and (self.data_dir / "logs").exists():
                    shutil.copytree(self.data_dir / "logs", self.keep_logs, dirs_exist_ok=True)
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> FaultStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- where things are --------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return self.supervisor.service("gateway").url

    @property
    def nats_url(self) -> str:
        return self.endpoints.nats_url

    @property
    def pg_dsn(self) -> str:
        return self.endpoints.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def component(self, name: str) -> Any:
        """The running infrastructure piece whose process is ``name`` (nats, postgres, s3)."""
        for c in self.infra.started:
            proc = getattr(c, "proc", None)
            if proc is not None and proc.name == name:
                return c
        raise LookupError(f"no infrastructure process {name!r} was started here")

    def logs(self) -> Path:
        return self.data_dir / "logs"

    # --- faults --------------------------------------------------------------------------------

    def kill_service(self, name: str) -> None:
        """kill -9; the supervisor notices and restarts it."""
        self.supervisor.service(name).proc.kill()

    def kill_infra(self, name: str) -> None:
        self.component(name).proc.kill()

    def start_infra(self, name: str) -> None:
        """Start a stopped or killed infrastructure piece again on the same port and data."""
        component = self.component(name)
        deadline = time.monotonic() + 60
        while True:
            try:
                component.start()
                return
            except Exception:
                # e.g. PostgreSQL refusing to start while the killed one's port is in TIME_WAIT.
                component.proc.kill()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def restart_infra(self, name: str) -> None:
        self.kill_infra(name)
        self.start_infra(name)

    def stop_infra(self, name: str) -> None:
        self.component(name).stop()

    def wait_all_ready(self, timeout: float = 120) -> None:
        wait_until(self.supervisor.all_ready, timeout=timeout, what="every service ready")
        wait_until(
            lambda: httpx.get(f"{self.gateway_url}/readyz", timeout=2).status_code == 200,
            timeout=timeout,
            what="gateway ready",
        )
