"""Trace parsing throughput: ``perf script`` lines parsed per second.

Parses the real traces committed under ``tests/data/traces`` (repeated to about
200,000 lines, mostly page faults, as real traces are) with
``kpsim.workloads.trace.parse_lines``, then resolves them with ``memory_ops``.
Each figure is also given as a ratio to the cheapest Python pass over the same
lines (``str.split()`` of every line), timed in the same run. Target (issue 8):
well above 200,000 lines/s. Figures are printed, never asserted.

Run: ``python -m benchmarks trace`` or ``python -m benchmarks.bench_trace``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kpsim.workloads.trace import memory_ops, parse_lines

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
TARGET = 200_000
LINES = 200_000


def corpus() -> list[str]:
    """The committed pid/tid-layout traces, repeated to about :data:`LINES` lines."""
    one: list[str] = []
    for path in sorted(TRACES.glob("*.trace")):
        if not path.name.endswith(".default.trace"):
            one += path.read_text().splitlines(keepends=True)
    if not one:
        raise SystemExit(f"bench_trace: no traces under {TRACES}")
    return one * max(1, LINES // len(one))


def best_of(n: int, fn: Callable[[], object]) -> float:
    """The fastest of ``n`` runs of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    lines = corpus()
    n = len(lines)
    base = best_of(3, lambda: [s.split() for s in lines])
    parse = best_of(3, lambda: list(parse_lines(lines)))
    events = list(parse_lines(lines))
    ops = best_of(3, lambda: sum(1 for _ in memory_ops(events)))
    print(f"trace parsing ({n:,} lines of perf script, {TRACES.name}/*.trace)")
    print(f"  baseline str.split   {n / base:>12,.0f} lines/s")
    print(
        f"  parse_lines          {n / parse:>12,.0f} lines/s   "
        f"({parse / base:.1f}x baseline; target {TARGET:,})"
    )
    print(f"  memory_ops           {n / ops:>12,.0f} events/s  ({ops / base:.1f}x baseline)")
    print(f"  parse + memory_ops   {n / (parse + ops):>12,.0f} events/s")


if __name__ == "__main__":
    main()
