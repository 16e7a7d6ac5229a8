"""Keeps the services running: a process that exits is started again after an exponential
backoff, as systemd's ``Restart=always`` or a Kubernetes pod's ``restartPolicy: Always`` would.

``make run`` and the fault matrix (tests/faults) use this same class, so what the tests show
about recovery is what a developer's stack does.

- A child that exits (any code, any signal) is restarted after ``Backoff.delay(n)`` where ``n``
  counts its consecutive short-lived runs; a run that stayed up ``reset_after_s`` resets ``n``.
- Every exit and restart is logged (service, exit code or signal, uptime, delay, restart
  count), and so is the moment the restarted process answers ``/readyz`` again.
- ``stop()`` stops the watcher first (nothing is restarted while stopping), then every child
  in reverse start order.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import httpx

from .processes import wait_until
from .stack import ServiceProcess, pump_prefixed

log = logging.getLogger("genimage_devstack.supervisor")


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    # A run at least this long was healthy: the next crash starts again from ``initial_s``.
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        """Delay before the restart that follows the ``failures``-th consecutive short run."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(failures - 1, 0)))


@dataclass
class Restart:
    """One exit and what the supervisor did about it."""

    service: str
    exit: str  # "exit code 1" | "signal SIGKILL"
    uptime_s: float
    delay_s: float
    count: int  # restarts of this service so far, this one included
    exited_at: float  # time.monotonic()
    restarted_at: float | None = None
    ready_at: float | None = None

    @property
    def recovery_s(self) -> float | None:
        """From the exit being noticed to ``/readyz`` answering again."""
        return None if self.ready_at is None else round(self.ready_at - self.exited_at, 3)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Child:
    service: ServiceProcess
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None  # set while waiting out the backoff
    pending: Restart | None = None  # restarted, not ready yet


@dataclass
class Supervisor:
    services: Sequence[ServiceProcess]
    backoff: Backoff = field(default_factory=Backoff)
    # Where children's output goes, each line prefixed with the service name; None: each
    # ServiceProcess's own log file.
    output: IO[str] | None = None
    poll_s: float = 0.2
    history: list[Restart] = field(default_factory=list, init=False)
    _children: dict[str, _Child] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._children = {s.name: _Child(s) for s in self.services}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, *, ready_timeout: float = 60) -> Supervisor:
        """Start every service, wait until each is ready, then watch them. On failure nothing
        is left running."""
        try:
            for child in self._children.values():
                self._spawn(child)
            for child in self._children.values():
                child.service.wait_ready(timeout=ready_timeout)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        for child in reversed(list(self._children.values())):
            child.service.stop()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- queries for callers (tests, the fault driver) ---------------------------------------

    def service(self, name: str) -> ServiceProcess:
        return self._children[name].service

    def restarts(self, name: str) -> int:
        with self._lock:
            return self._children[name].restarts

    def wait_ready(self, name: str, *, timeout: float = 60) -> None:
        """Until the service's current process answers ``/readyz`` (restarts included)."""
        svc = self.service(name)
        wait_until(
            lambda: svc.proc.running and httpx.get(f"{svc.url}/readyz", timeout=1).status_code == 200,
            timeout=timeout,
            what=f"service {name} ready",
        )

    def all_ready(self) -> bool:
        for child in self._children.values():
            svc = child.service
            try:
                if not (svc.proc.running and httpx.get(f"{svc.url}/readyz", timeout=1).status_code == 200):
                    return False
            except httpx.HTTPError:
                return False
        return True

    # --- the watcher -----------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        svc = child.service
        if self.output is None:
            svc.start()
        else:
            popen = svc.start(stdout=subprocess.PIPE)
            assert popen.stdout is not None
            pump_prefixed(svc.name, popen.stdout, self.output)
        child.started_at = time.monotonic()

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            for child in self._children.values():
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._tend(child)
                self._check_ready(child)

    def _tend(self, child: _Child) -> None:
        now = time.monotonic()
        svc = child.service
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                try:
                    self._spawn(child)
                except OSError as exc:  # e.g. out of processes: try again later
                    log.error("service %s could not be started: %s", svc.name, exc)
                    child.failures += 1
                    child.restart_at = now + self.backoff.delay(child.failures)
                    return
                if child.pending is not None:
                    child.pending.restarted_at = child.started_at
                log.warning("service %s restarted (restart #%d, pid %s)", svc.name, child.restarts, svc.proc.pid)
            return
        code = svc.proc.returncode
        if code is None:
            return
        uptime = now - child.started_at
        child.failures = 1 if uptime >= self.backoff.reset_after_s else child.failures + 1
        delay = self.backoff.delay(child.failures)
        child.restarts += 1
        record = Restart(svc.name, describe_exit(code), round(uptime, 3), delay, child.restarts, now)
        self.history.append(record)
        child.pending = record
        child.restart_at = now + delay
        log.warning(
            "service %s exited (%s) after %.1fs up; restart #%d in %.1fs%s",
            svc.name,
            record.exit,
            uptime,
            child.restarts,
            delay,
            " (crash loop: backing off)" if child.failures >= 3 else "",
        )

    def _check_ready(self, child: _Child) -> None:
        record = child.pending
        if record is None or record.restarted_at is None:
            return
        svc = child.service
        try:
            ready = svc.proc.running and httpx.get(f"{svc.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready:
            with self._lock:
                record.ready_at = time.monotonic()
                child.pending = None
            log.warning(
                "service %s ready again %.1fs after it exited (restart #%d)",
                svc.name,
                record.recovery_s,
                record.count,
            )
