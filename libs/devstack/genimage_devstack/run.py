"""``make run``: infrastructure, streams, migrations and the four services under a supervisor
(a service that dies is restarted with backoff, logged), logs prefixed; Ctrl-C stops everything
it started, in reverse order. State lives under ``.data/`` and survives restarts."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .infra import Infra, Ports
from .stack import DEFAULT_PORTS, SERVICES, ServiceProcess, prepare, service_env
from .supervisor import Backoff, Supervisor


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


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _already_stopping(_signum: int, _frame: object) -> None:
    print("[devstack] already stopping, please wait", flush=True)


def run_stack(data_dir: Path, *, backoff: Backoff | None = None) -> None:
    # Ctrl-C or SIGTERM at any point (also while starting) unwinds into the `finally` below.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)

    ports = Ports(
        nats=_port("GENIMAGE_NATS_PORT", 4222),
        nats_monitor=_port("GENIMAGE_NATS_MONITOR_PORT", 8222),
        postgres=_port("GENIMAGE_POSTGRES_PORT", 5432),
        s3=_port("GENIMAGE_S3_PORT", 9000),
    )
    service_ports = {n: _port(f"{n.upper()}_PORT", DEFAULT_PORTS[n]) for n in SERVICES}
    infra = Infra(data_dir, ports)
    supervisor: Supervisor | None = None
    try:
        print(f"[devstack] starting infrastructure under {data_dir}", flush=True)
        endpoints = infra.start()
        print(f"[devstack] NATS {endpoints.nats_url}  PostgreSQL {endpoints.database_url}  S3 {endpoints.s3_endpoint}")
        env = service_env(endpoints)
        prepare(endpoints, env)
        # A service that dies is restarted with backoff; the stack no longer stops with it.
        supervisor = Supervisor(
            [ServiceProcess(name, service_ports[name], env) for name in SERVICES],
            backoff=backoff or Backoff(),
            output=sys.stdout,
        )
        supervisor.start()
        gw = service_ports["gateway"]
        print(
            f"\n  genimage is running: http://127.0.0.1:{gw}  (API docs: http://127.0.0.1:{gw}/docs)\n"
            "  A service that exits is restarted. Ctrl-C stops everything.\n",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the shutdown short (PostgreSQL would then need recovery).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _already_stopping)
        print("[devstack] stopping", flush=True)
        try:
            if supervisor is not None:
                supervisor.stop()
        finally:
            infra.stop()
