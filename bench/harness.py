"""What every benchmark needs: its own NATS/PostgreSQL/S3 on free ports, percentiles, and
results printed and written to ``bench/results/<name>.json``. Benchmarks assert nothing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genimage_devstack.infra import Endpoints, Infra, Ports
from genimage_devstack.stack import prepare, service_env

RESULTS = Path(__file__).parent / "results"


@contextmanager
def infrastructure(*, migrate: bool = True) -> Iterator[tuple[Endpoints, dict[str, str]]]:
    """Fresh infrastructure in a temporary directory; stopped on exit, also on error."""
    with tempfile.TemporaryDirectory(prefix="genimage-bench-") as tmp:
        infra = Infra(Path(tmp), Ports.free(), for_tests=True, environ={})
        endpoints = infra.start()
        try:
            env = service_env(endpoints, {"ENVIRONMENT": "test", "LOG_LEVEL": "WARNING"})
            if migrate:
                prepare(endpoints, env)
            yield endpoints, env
        finally:
            infra.stop()


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples_s),
        "p50_ms": round(percentile(samples_s, 50) * 1000, 3),
        "p99_ms": round(percentile(samples_s, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 3) if samples_s else float("nan"),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return path
