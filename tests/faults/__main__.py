"""``python -m tests.faults [--long]``: run the fault matrix, print the faults x invariants table,
write it to ``bench/results/faults[-ci].json`` and ``.md``. Exits 1 when an invariant failed."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tests.faults.matrix import CI, FINAL, LONG, run_matrix, table, write_results

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="every fault several times, >= 1,000 generations")
    parser.add_argument("--repeats", type=int, help="override the number of runs of each fault")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/faults[-ci].json)")
    parser.add_argument("--logs", type=Path, help="keep the services' and infrastructure's logs here")
    args = parser.parse_args(argv)
    size = LONG if args.long else CI
    if args.repeats:
        from dataclasses import replace

        size = replace(size, repeats=args.repeats)
    out = args.out or RESULTS / ("faults.json" if args.long else "faults-ci.json")
    started = time.monotonic()
    results = asyncio.run(run_matrix(size, logs_dir=args.logs))
    path = write_results(results, out, size=size, seconds=time.monotonic() - started)
    print()
    print(table(results))
    total = sum(r.generations for r in results if r.fault != FINAL)
    print(f"\n{total} generations in {time.monotonic() - started:.0f}s; written to {path}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
