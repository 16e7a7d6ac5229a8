"""The supervisor of ``make run``: a service that dies is restarted with exponential backoff,
logged, and ready again; Ctrl-C still stops everything."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from genimage_devstack.processes import Proc, free_port, wait_until
from genimage_devstack.stack import SERVICES, ServiceProcess
from genimage_devstack.supervisor import Backoff, Supervisor

# A stand-in service: answers every GET with 200 and exits with code 3 after `life` seconds (0: never).
FAKE = """
import http.server, os, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
life = float(sys.argv[2])
if life > 0:
    threading.Timer(life, lambda: os._exit(3)).start()
srv.serve_forever()
"""


def fake(name: str, tmp: Path, life: float = 0) -> ServiceProcess:
    svc = ServiceProcess(name, free_port(), dict(os.environ))
    svc.proc = Proc(name, [sys.executable, "-c", FAKE, str(svc.port), str(life)], log_path=tmp / f"{name}.log")
    return svc


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(initial_s=0.5, factor=2, max_s=3)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_killed_service_is_restarted_and_ready_again(tmp_path: Path) -> None:
    a, b = fake("alpha", tmp_path), fake("beta", tmp_path)
    with Supervisor([a, b], backoff=Backoff(initial_s=0.2, reset_after_s=30), poll_s=0.05) as sup:
        first = a.proc.pid
        a.proc.kill()
        wait_until(lambda: sup.restarts("alpha") == 1 and a.proc.running, timeout=20, what="alpha restarted")
        sup.wait_ready("alpha", timeout=20)
        assert a.proc.pid != first
        wait_until(lambda: sup.history[-1].ready_at is not None, timeout=20, what="recovery recorded")
        (record,) = sup.history
        assert (record.service, record.exit, record.count, record.delay_s) == ("alpha", "signal SIGKILL", 1, 0.2)
        assert record.recovery_s is not None and record.recovery_s >= 0.2
        assert sup.restarts("beta") == 0 and b.proc.running
    # Stopped in reverse order, nothing left behind, nothing restarted while stopping.
    assert not a.proc.running and not b.proc.running
    assert len(sup.history) == 1


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_crash_loop_backs_off_exponentially(tmp_path: Path) -> None:
    crasher = fake("crasher", tmp_path, life=0.8)
    sup = Supervisor([crasher], backoff=Backoff(initial_s=0.2, factor=2, max_s=0.8, reset_after_s=30), poll_s=0.05)
    with sup:
        wait_until(lambda: len(sup.history) >= 4, timeout=40, what="four restarts")
        sup_history = list(sup.history)
    assert [r.exit for r in sup_history[:4]] == ["exit code 3"] * 4
    assert [r.delay_s for r in sup_history[:4]] == [0.2, 0.4, 0.8, 0.8]
    assert [r.count for r in sup_history[:4]] == [1, 2, 3, 4]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_run_that_stayed_up_resets_the_backoff(tmp_path: Path) -> None:
    crasher = fake("steady", tmp_path, life=0.8)
    sup = Supervisor([crasher], backoff=Backoff(initial_s=0.2, factor=2, max_s=5, reset_after_s=0.5), poll_s=0.05)
    with sup:
        wait_until(lambda: len(sup.history) >= 3, timeout=30, what="three restarts")
    assert [r.delay_s for r in sup.history[:3]] == [0.2, 0.2, 0.2]


# --- `make run` itself ---------------------------------------------------------------------------


def _children(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` and their command lines."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_make_run_restarts_a_killed_service_and_stops_cleanly_on_ctrl_c() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="genimage-run-"))  # PostgreSQL's user must reach it (ADR 1)
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT")}
    env.update(
        {
            "GENIMAGE_NATS_PORT": str(free_port()),
            "GENIMAGE_NATS_MONITOR_PORT": str(free_port()),
            "GENIMAGE_POSTGRES_PORT": str(free_port()),
            "GENIMAGE_S3_PORT": str(free_port()),
            **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        }
    )
    log = data_dir / "run.log"
    run = Proc("devstack", [sys.executable, "-m", "genimage_devstack", "run", "--data-dir", str(data_dir)], env, log)
    try:
        run.start()
        assert run.popen is not None
        wait_until(
            lambda: "genimage is running" in log.read_text(), timeout=180, what="make run started", proc=run.popen
        )
        services = {
            name: pid
            for pid, cmd in _children(run.popen.pid).items()
            for name in SERVICES
            if cmd.endswith(f"-m {name} ")
        }
        assert set(services) == set(SERVICES), _children(run.popen.pid)
        infra = [pid for pid in _children(run.popen.pid) if pid not in services.values()]

        os.kill(services["billing"], signal.SIGKILL)
        wait_until(
            lambda: re.search(r"service billing exited \(signal SIGKILL\).*restart #1 in", log.read_text()) is not None,
            timeout=30,
            what="the exit logged",
        )
        wait_until(
            lambda: (
                httpx.get(f"http://127.0.0.1:{ports['billing']}/readyz", timeout=2).status_code == 200
                and "service billing ready again" in log.read_text()
            ),
            timeout=60,
            what="billing back",
            proc=run.popen,
        )
        now = {n: p for p, cmd in _children(run.popen.pid).items() for n in SERVICES if cmd.endswith(f"-m {n} ")}
        assert now["billing"] != services["billing"]
        assert {n: now[n] for n in SERVICES if n != "billing"} == {n: services[n] for n in SERVICES if n != "billing"}
        # The stack kept serving: the gateway answers and reaches billing again.
        r = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/v1/auth/signup",
            json={"email": "after-restart@example.com", "password": "correct horse battery"},
            timeout=10,
        )
        assert r.status_code == 201, r.text

        children = list(now.values()) + infra
        run.popen.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.popen.wait(90) == 0, log.read_text()[-3000:]
        wait_until(lambda: not any(_alive(p) for p in children), timeout=10, what="every child stopped")
        text = log.read_text()
        assert "[devstack] stopping" in text
        assert "restart #2" not in text  # nothing restarted while stopping
    finally:
        run.stop(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
