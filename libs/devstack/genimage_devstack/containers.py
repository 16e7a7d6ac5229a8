"""``GENIMAGE_INFRA=containers``: NATS, PostgreSQL and MinIO with testcontainers, where Docker runs."""

from __future__ import annotations

from typing import Any

from .infra import Endpoints

NATS_IMAGE = "nats:2.11-alpine"
POSTGRES_IMAGE = "postgres:17-alpine"
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"


class ContainerInfra:
    def __init__(self) -> None:
        self._containers: list[Any] = []

    def start(self) -> Endpoints:
        from testcontainers.community.minio import MinioContainer
        from testcontainers.community.nats import NatsContainer
        from testcontainers.community.postgres import PostgresContainer

        nats = NatsContainer(NATS_IMAGE, jetstream=True)
        self._run(nats)
        postgres = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="genimage")
        self._run(postgres)
        minio = MinioContainer(MINIO_IMAGE, access_key="genimage", secret_key="genimage-secret")
        self._run(minio)

        pg_host, pg_port = postgres.get_container_host_ip(), postgres.get_exposed_port(5432)
        s3_host, s3_port = minio.get_container_host_ip(), minio.get_exposed_port(9000)
        return Endpoints(
            nats_url=nats.nats_uri(),
            database_url=f"postgresql+asyncpg://postgres:postgres@{pg_host}:{pg_port}/genimage",
            s3_endpoint=f"http://{s3_host}:{s3_port}",
            s3_access_key="genimage",
            s3_secret_key="genimage-secret",
        )

    def _run(self, container: Any) -> None:
        container.start()
        self._containers.append(container)

    def stop(self) -> None:
        while self._containers:
            self._containers.pop().stop()
