"""The local S3 store (ADR 4): a disk store for `make run` and the end-to-end tests, moto for tests
where speed matters more than durability.

``DiskS3`` runs ``python -m genimage_devstack.s3server`` (nanio over ``<data_dir>/s3``, objects as
files, SigV4 checked) and, on its first start over a ``.data/`` of the previous release, migrates
the objects out of the moto request recording that release kept (see ``s3migration``).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx

from .processes import LOOPBACK, Proc, wait_until
from .s3migration import LEGACY_RECORDING, migrate_recording

DEFAULT_ACCESS_KEY = "genimage"
DEFAULT_SECRET_KEY = "genimage-secret"
STORES = ("disk", "moto")


class DiskS3:
    """Objects as files under ``<data_dir>/s3/<bucket>/<key>``; an acknowledged PUT survives kill -9."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        migrate: bool = True,
    ) -> None:
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.root = data_dir / "s3"
        self.access_key, self.secret_key = access_key, secret_key
        self.migrate = migrate
        self.log_dir = data_dir / "logs"
        # Credentials through the environment: argv is readable by every user in `ps`.
        env = {**os.environ, "NANIO_ACCESS_KEY": access_key, "NANIO_SECRET_KEY": secret_key}
        self.proc = Proc(
            "s3",
            [
                sys.executable,
                "-m",
                "genimage_devstack.s3server",
                "--data-dir",
                str(self.root),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
            ],
            env=env,
            log_path=self.log_dir / "s3.log",
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        popen = self.proc.start()
        try:
            wait_until(
                lambda: httpx.get(f"{self.url}/-/healthz", timeout=1).status_code == 200,
                timeout=60,
                what="S3 disk store",
                proc=popen,
            )
            legacy = self.root / LEGACY_RECORDING
            if self.migrate and legacy.exists():
                migrate_recording(
                    legacy,
                    target=self.url,
                    access_key=self.access_key,
                    secret_key=self.secret_key,
                    log_dir=self.log_dir,
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash would: for the tests of what survives one."""
        p = self.proc.popen
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)


class MotoS3:
    """``moto[server]``: objects in memory, gone when it stops. For tests where speed matters, and to
    read a recording of the previous release during migration (``replay``)."""

    def __init__(self, data_dir: Path, *, port: int, replay: Path | None = None, log_name: str = "s3-moto.log") -> None:
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.replay = replay
        env = dict(os.environ)
        env.pop("MOTO_ENABLE_RECORDING", None)
        if replay is not None:
            # The recorder reads this file when asked to replay; recording itself stays off.
            env["MOTO_RECORDER_FILEPATH"] = str(replay)
        self.proc = Proc(
            "s3-moto",
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            env=env,
            log_path=data_dir / "logs" / log_name,
        )

    def start(self) -> None:
        popen = self.proc.start()
        try:
            wait_until(
                lambda: httpx.get(f"{self.url}/moto-api/", timeout=1).status_code == 200,
                timeout=60,
                what="moto S3 server",
                proc=popen,
            )
            if self.replay is not None:
                httpx.post(f"{self.url}/moto-api/recorder/replay-recording", timeout=600).raise_for_status()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()
