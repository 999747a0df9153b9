"""Every throughput figure in one command, at small sizes (< 3 min on 2 CPU cores).

Runs :func:`bench_transport.run` (all solvers at 64³ and 100³, copy bandwidth,
roofline, NumPy FTCS) and :func:`bench_cells.run` (1e4 and 1e5 cells on a 64³
grid, nearest and linear coupling, sorted vs random order). For the full
sizes run the two scripts directly.

Usage::

    python scripts/bench.py
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    transport = importlib.import_module("bench_transport")
    cells = importlib.import_module("bench_cells")
    t0 = time.perf_counter()
    print("== transport ==")
    transport.run(sizes=(64, 100), steps=10, repeat=2)
    print("\n== cells ==")
    cells.run(cells=(10_000, 100_000), n=64, steps=5, modes=("fixed", "response"), repeat=2)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
