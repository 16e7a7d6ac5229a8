"""``make run``: infrastructure, streams, migrations and the four services, logs prefixed; Ctrl-C
stops everything it started, in reverse order. State lives under ``.data/`` and survives restarts."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .infra import Infra, Ports
from .stack import DEFAULT_PORTS, SERVICES, ServiceProcess, prepare, pump_prefixed, service_env


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genimage_devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the whole stack on loopback")
    run.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[devstack] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    if args.command == "run":
        run_stack(args.data_dir.resolve())


def run_stack(data_dir: Path) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    ports = Ports(
        nats=_port("GENIMAGE_NATS_PORT", 4222),
        nats_monitor=_port("GENIMAGE_NATS_MONITOR_PORT", 8222),
        postgres=_port("GENIMAGE_POSTGRES_PORT", 5432),
        s3=_port("GENIMAGE_S3_PORT", 9000),
    )
    service_ports = {n: _port(f"{n.upper()}_PORT", DEFAULT_PORTS[n]) for n in SERVICES}
    infra = Infra(data_dir, ports)
    procs: list[ServiceProcess] = []
    try:
        print(f"[devstack] starting infrastructure under {data_dir}", flush=True)
        endpoints = infra.start()
        print(f"[devstack] NATS {endpoints.nats_url}  PostgreSQL {endpoints.database_url}  S3 {endpoints.s3_endpoint}")
        env = service_env(endpoints)
        prepare(endpoints, env)
        for name in SERVICES:
            p = ServiceProcess(name, service_ports[name], env)
            popen = p.start(stdout=subprocess.PIPE)
            assert popen.stdout is not None
            pump_prefixed(name, popen.stdout, sys.stdout)
            procs.append(p)
        for p in procs:
            p.wait_ready()
        gw = service_ports["gateway"]
        print(
            f"\n  genimage is running: http://127.0.0.1:{gw}  (API docs: http://127.0.0.1:{gw}/docs)\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop.is_set():
            if any(p.proc.popen and p.proc.popen.poll() is not None for p in procs):
                print("[devstack] a service exited; stopping the stack", flush=True)
                break
            stop.wait(0.5)
    finally:
        print("[devstack] stopping", flush=True)
        for p in reversed(procs):
            p.stop()
        infra.stop()
