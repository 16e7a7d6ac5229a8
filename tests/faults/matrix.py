"""The fault matrix: one stack, a steady load, faults injected one at a time; after each, wait for
quiescence and check every invariant for every request of that phase. A baseline phase without a
fault comes first, so a failing invariant can be told apart from the fault's effect.

``run_matrix(CI)`` is what the test runs; ``run_matrix(LONG)`` (``make faults``) repeats every
fault several times with longer load, for ≥ 1,000 generations.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genimage_common.streams import DLQ
from tests.api import TestUser
from tests.faults.driver import Driver, Sent
from tests.faults.invariants import CHECKS, Check, Phase, check_phase, last_seq, quiesce
from tests.faults.stack import FaultStack

Log = Callable[[str], None]


@dataclass(frozen=True)
class Size:
    repeats: int
    users: int  # new users per phase (credits are checked per user, so per phase)
    clients: int  # concurrent clients, each submitting then following its generation
    warmup: int  # requests accepted before the fault is injected
    load_after_s: float  # the load keeps going this long once the stack is ready again
    quiesce_s: float  # deadline for every generation to end and every consumer to drain
    outage_s: float = 30.0


CI = Size(repeats=1, users=2, clients=3, warmup=4, load_after_s=3.0, quiesce_s=60.0)
LONG = Size(repeats=3, users=3, clients=6, warmup=8, load_after_s=20.0, quiesce_s=180.0)

Inject = Callable[[FaultStack, Driver, str, Size, Log], Awaitable[dict[str, Any]]]


async def until(probe: Callable[[], bool], *, timeout: float) -> bool:
    """Poll ``probe`` until it is true or ``timeout`` passed; whether it became true."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _ready_again(stack: FaultStack, started: float) -> float:
    await asyncio.to_thread(stack.wait_all_ready, 180)
    return round(time.monotonic() - started, 2)


def kill_service(name: str) -> Inject:
    async def inject(stack: FaultStack, driver: Driver, phase: str, size: Size, log: Log) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if name == "generation":
            # Mid-render: wait until a client sees one of its generations running.
            await until(lambda: bool(driver.running(phase)), timeout=30)
            running = driver.running(phase)
            info["video_running_at_kill"] = sum(s.body["kind"] == "video" for s in running)
        started = time.monotonic()
        restarts = stack.supervisor.restarts(name)
        await asyncio.to_thread(stack.kill_service, name)
        log(f"    killed {name} (kill -9)")
        if not await until(lambda: stack.supervisor.restarts(name) > restarts, timeout=60):
            raise AssertionError(f"the supervisor did not restart {name}")
        info["recovery_s"] = await _ready_again(stack, started)
        return info

    return inject


def restart_infra(name: str) -> Inject:
    async def inject(stack: FaultStack, driver: Driver, phase: str, size: Size, log: Log) -> dict[str, Any]:
        started = time.monotonic()
        await asyncio.to_thread(stack.restart_infra, name)
        log(f"    {name} killed (kill -9) and started again in {time.monotonic() - started:.1f}s")
        return {"recovery_s": await _ready_again(stack, started)}

    return inject


def outage(name: str) -> Inject:
    async def inject(stack: FaultStack, driver: Driver, phase: str, size: Size, log: Log) -> dict[str, Any]:
        seconds = size.outage_s
        started = time.monotonic()
        await asyncio.to_thread(stack.stop_infra, name)
        log(f"    {name} stopped for {seconds:.0f}s")
        await asyncio.sleep(seconds)  # the outage itself, not a synchronisation
        await asyncio.to_thread(stack.start_infra, name)
        return {"outage_s": seconds, "recovery_s": await _ready_again(stack, started)}

    return inject


async def no_fault(stack: FaultStack, driver: Driver, phase: str, size: Size, log: Log) -> dict[str, Any]:
    return {}


FINAL = "all requests, at the end"
FAULTS: list[tuple[str, Inject]] = [
    ("none (baseline)", no_fault),
    ("kill -9 generation mid-render", kill_service("generation")),
    ("kill -9 billing", kill_service("billing")),
    ("kill -9 gallery", kill_service("gallery")),
    ("kill -9 gateway", kill_service("gateway")),
    ("restart NATS (kill -9)", restart_infra("nats")),
    ("restart PostgreSQL (kill -9)", restart_infra("postgres")),
    ("restart S3 store (kill -9)", restart_infra("s3")),
    ("PostgreSQL outage", outage("postgres")),
]


@dataclass
class PhaseResult:
    fault: str
    phase: str
    requests: int = 0
    # Every request of the phase as its client saw it (evidence for a failing check).
    sent: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    generations: int = 0
    succeeded: int = 0
    failed: int = 0
    answer_lost: int = 0
    client_saw: dict[str, int] = field(default_factory=dict)  # attempt outcomes: {"202": 40, "503": 3}
    fault_info: dict[str, Any] = field(default_factory=dict)
    quiesce_s: float = 0.0
    quiesce_waited_on: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())


async def run_phase(
    stack: FaultStack, driver: Driver, fault: str, inject: Inject, phase: str, size: Size, log: Log
) -> PhaseResult:
    started = time.monotonic()
    result = PhaseResult(fault, phase)
    users = [await driver.signup(phase) for _ in range(size.users)]
    dlq_from = await last_seq(stack.nats_url, DLQ)
    history_from = len(stack.supervisor.history)
    load = asyncio.ensure_future(driver.run_clients(users, phase, size.clients))
    try:
        deadline = time.monotonic() + 60
        while sum(s.outcome == "accepted" for s in driver.of_phase(phase)) < size.warmup:
            assert time.monotonic() < deadline, "the load did not start"
            assert not load.done(), load.exception()
            await asyncio.sleep(0.05)
        if inject is not no_fault:
            # Faults land while work is in flight: renders running, their events to be consumed.
            await until(lambda: bool(driver.running(phase)), timeout=15)
        in_flight = len(driver.running(phase))
        recovered = Check("recovered")
        try:
            result.fault_info = {"running_at_fault": in_flight, **await inject(stack, driver, phase, size, log)}
            recovered.good()
            await asyncio.sleep(size.load_after_s)  # load duration after recovery
        except (TimeoutError, AssertionError) as exc:  # the stack did not come back
            recovered.fail(f"{exc!r}; last restarts: {[r.exit for r in stack.supervisor.history[-3:]]}")
    finally:
        driver.stop.set()
        try:
            await asyncio.wait_for(load, 150)
        finally:
            driver.stop.clear()
    if recovered.passed:
        await assess(stack, driver, result, users, driver.of_phase(phase), dlq_from, size)
    result.checks = {"recovered": recovered, **result.checks}
    result.restarts = [
        f"{r.service}: {r.exit} after {r.uptime_s:.1f}s up, restart #{r.count} in {r.delay_s}s, "
        f"ready {r.recovery_s}s after the exit"
        for r in stack.supervisor.history[history_from:]
    ]
    result.seconds = round(time.monotonic() - started, 1)
    return result


async def assess(
    stack: FaultStack,
    driver: Driver,
    result: PhaseResult,
    users: list[TestUser],
    sent: list[Sent],
    dlq_from: int,
    size: Size,
) -> None:
    """Quiescence, then every invariant for ``sent`` and ``users``, into ``result``."""
    waited_on: set[str] = set()
    quiescent, result.quiesce_s = await quiesce(stack, users, timeout=size.quiesce_s, waited_on=waited_on)
    result.quiesce_waited_on = sorted(waited_on)
    checks = await check_phase(stack, driver, Phase(result.phase, users, sent, dlq_from))
    result.checks = {"quiescent": quiescent, **checks}
    result.requests = len(sent)
    result.sent = [
        {
            "rid": s.rid,
            "user": s.user.id,
            "kind": s.body["kind"],
            "n": s.body.get("n", 1),
            "key": s.key,
            "attempts": s.attempts,
            "outcome": s.outcome,
            "generation_id": s.generation_id,
            "last_seen": s.last_seen,
        }
        for s in sent
    ]
    result.accepted = sum(s.outcome == "accepted" for s in sent)
    result.answer_lost = sum(s.outcome in ("lost", "gave_up") for s in sent)
    result.client_saw = dict(Counter(a for s in sent for a in s.attempts))
    terminal = result.checks["terminal_once"]
    result.generations = terminal.ok + terminal.failed
    result.succeeded = sum(s.last_seen == "succeeded" for s in sent)
    result.failed = sum(s.last_seen == "failed" for s in sent)


def _report(result: PhaseResult, log: Log) -> None:
    log(
        f"    {result.requests} requests, {result.generations} generations, "
        f"quiescent after {result.quiesce_s}s, {result.seconds}s: "
        + ", ".join(f"{k} {c.cell()}" for k, c in result.checks.items())
    )
    for name, check in result.checks.items():
        for d in check.details[:3]:
            log(f"      {name}: {d}")


async def run_matrix(size: Size, *, log: Log = print, logs_dir: Path | None = None) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    stack = FaultStack(keep_logs=logs_dir)
    # Blocking (processes, migrations that run their own event loop): off the loop.
    await asyncio.to_thread(stack.start)
    try:
        log(f"[faults] stack under {stack.data_dir}; S3 store: {type(stack.component('s3')).__name__}")
        driver = Driver(stack.gateway_url, seed=int(os.environ.get("FAULTS_SEED", "7")))
        try:
            for repeat in range(size.repeats):
                for index, (fault, inject) in enumerate(FAULTS):
                    if fault.startswith("none") and repeat:
                        continue
                    phase = f"f{index}x{repeat}"
                    log(f"[faults] {fault} (run {repeat + 1}/{size.repeats})")
                    result = await run_phase(stack, driver, fault, inject, phase, size, log)
                    results.append(result)
                    _report(result, log)
                    if not result.checks["recovered"].passed:
                        log("[faults] the stack did not recover: stopping the matrix here")
                        return results
            # Later faults must not have undone earlier outcomes (e.g. objects lost by an S3
            # restart): every request of the run, checked again at the end.
            log("[faults] every request of the run, checked again")
            started = time.monotonic()
            final = PhaseResult(FINAL, "all")
            await driver.reauthenticate()
            await assess(stack, driver, final, driver.users, driver.sent, 0, size)
            final.seconds = round(time.monotonic() - started, 1)
            final.sent = []  # each phase lists its own
            results.append(final)
            _report(final, log)
        finally:
            await driver.aclose()
    finally:
        await asyncio.to_thread(stack.stop)
    return results


# --- the table ----------------------------------------------------------------------------------


def table(results: list[PhaseResult]) -> str:
    """Faults x invariants, summed over the repeats of each fault."""
    faults = list(dict.fromkeys(r.fault for r in results))
    header = ["fault", "runs", "generations", "lost answers", "recovery s", "quiesce s", *CHECKS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fault in faults:
        rows = [r for r in results if r.fault == fault]
        cells = []
        for name in CHECKS:
            ok = sum(r.checks[name].ok for r in rows if name in r.checks)
            bad = sum(r.checks[name].failed for r in rows if name in r.checks)
            cells.append("-" if not ok + bad else f"pass {ok}/{ok + bad}" if not bad else f"**FAIL** {bad}/{ok + bad}")
        recovery = [r.fault_info.get("recovery_s") for r in rows if r.fault_info.get("recovery_s") is not None]
        lines.append(
            "| "
            + " | ".join(
                [
                    fault,
                    str(len(rows)),
                    str(sum(r.generations for r in rows)),
                    str(sum(r.answer_lost for r in rows)),
                    "/".join(f"{x:.1f}" for x in recovery) or "-",
                    "/".join(f"{r.quiesce_s:.0f}" for r in rows),
                    *cells,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def write_results(results: list[PhaseResult], path: Path, *, size: Size, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "faults",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "size": asdict(size),
        "seconds": round(seconds, 1),
        "generations": sum(r.generations for r in results if r.fault != FINAL),
        "table": table(results),
        "phases": [
            {
                **{k: v for k, v in asdict(r).items() if k != "checks"},
                "checks": {k: c.as_dict() for k, c in r.checks.items()},
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.with_suffix(".md").write_text(
        f"# Fault matrix ({doc['at']}, {doc['generations']} generations, {doc['seconds']} s)\n\n{doc['table']}\n"
    )
    return path
