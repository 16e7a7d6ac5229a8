"""The three infrastructure pieces behind one interface, from local processes, containers or
the environment (``NATS_URL`` / ``DATABASE_URL`` / ``S3_ENDPOINT`` win when set).

The local S3 store is the disk store (ADR 4) unless ``s3_store="moto"`` (or
``GENIMAGE_S3_STORE=moto``) asks for moto's in-memory one, for tests where speed matters."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .processes import NatsServer, PostgresServer, free_port
from .s3 import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, STORES, DiskS3, MotoS3

log = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Endpoints:
    nats_url: str
    database_url: str
    s3_endpoint: str
    s3_access_key: str = DEFAULT_ACCESS_KEY
    s3_secret_key: str = DEFAULT_SECRET_KEY

    def env(self) -> dict[str, str]:
        return {
            "NATS_URL": self.nats_url,
            "DATABASE_URL": self.database_url,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
        }


@dataclass
class Ports:
    nats: int = 4222
    nats_monitor: int = 8222
    postgres: int = 5432
    s3: int = 9000

    @classmethod
    def free(cls) -> Ports:
        return cls(nats=free_port(), nats_monitor=free_port(), postgres=free_port(), s3=free_port())


@dataclass
class Infra:
    """Starts what the environment does not already provide; stops only what it started."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    for_tests: bool = False
    # "disk" (make run, end-to-end tests) or "moto"; None: GENIMAGE_S3_STORE, else "disk".
    s3_store: str | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    started: list[Component] = field(default_factory=list, init=False)
    endpoints: Endpoints | None = field(default=None, init=False)

    def start(self) -> Endpoints:
        if self.environ.get("GENIMAGE_INFRA", "processes") == "containers":
            return self._start_containers()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.environ
        try:
            nats_url = (
                env.get("NATS_URL")
                or self._start(
                    NatsServer(self.data_dir, port=self.ports.nats, monitor_port=self.ports.nats_monitor)
                ).url
            )
            database_url = (
                env.get("DATABASE_URL")
                or self._start(PostgresServer(self.data_dir, port=self.ports.postgres, fast=self.for_tests)).url
            )
            if env.get("S3_ENDPOINT"):
                self.endpoints = Endpoints(
                    nats_url,
                    database_url,
                    env["S3_ENDPOINT"],
                    env.get("S3_ACCESS_KEY", DEFAULT_ACCESS_KEY),
                    env.get("S3_SECRET_KEY", DEFAULT_SECRET_KEY),
                )
            else:
                s3 = self._start(self._s3())
                self.endpoints = Endpoints(nats_url, database_url, s3.url)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def _s3(self) -> DiskS3 | MotoS3:
        store = self.s3_store or self.environ.get("GENIMAGE_S3_STORE") or "disk"
        if store not in STORES:
            raise ValueError(f"unknown S3 store {store!r}: one of {', '.join(STORES)}")
        if store == "moto":
            return MotoS3(self.data_dir, port=self.ports.s3)
        return DiskS3(self.data_dir, port=self.ports.s3)

    def _start(self, component: Any) -> Any:
        component.start()
        self.started.append(component)
        return component

    def _start_containers(self) -> Endpoints:
        from .containers import ContainerInfra

        containers = ContainerInfra()
        self.started.append(containers)
        try:
            self.endpoints = containers.start()
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self) -> None:
        errors: list[BaseException] = []
        while self.started:
            component = self.started.pop()
            try:
                component.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]
