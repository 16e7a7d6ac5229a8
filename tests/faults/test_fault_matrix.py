"""The CI-sized fault matrix (issue 10 §2): one private stack under a steady load of generations,
each fault injected once, every invariant checked for every request after each fault and again
for the whole run at the end. ``make faults`` runs the long version."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.faults.matrix import CI, FAULTS, FINAL, run_matrix, table, write_results

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)  # the whole matrix; it takes about 4 minutes on 2 idle cores
async def test_every_invariant_holds_under_each_fault(tmp_path: Path) -> None:
    started = time.monotonic()
    results = await run_matrix(CI, logs_dir=tmp_path / "logs")
    path = write_results(results, tmp_path / "faults-ci.json", size=CI, seconds=time.monotonic() - started)
    print(f"\n{table(results)}\n(details: {path}, logs: {tmp_path / 'logs'})")

    failures = {
        f"{r.fault} / {name}": check.details[:6]
        for r in results
        for name, check in r.checks.items()
        if not check.passed
    }
    assert not failures, f"\n{table(results)}\n\n{json.dumps(failures, indent=1)}"

    # The matrix really ran: every fault once, with load, and every kill answered by a restart.
    assert [r.fault for r in results] == [f for f, _ in FAULTS] + [FINAL]
    assert all(r.generations > 0 for r in results), [(r.fault, r.generations) for r in results]
    for r in results:
        if r.fault.startswith("kill -9"):
            service = r.fault.split()[2]
            assert any(line.startswith(f"{service}: signal SIGKILL") for line in r.restarts), (r.fault, r.restarts)
