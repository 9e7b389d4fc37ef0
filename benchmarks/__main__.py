"""Run the benchmarks: ``python -m benchmarks`` (all) or ``python -m benchmarks hw``.

Every ``benchmarks/bench_*.py`` module exposes ``main()``, which measures and prints
its figures (benchmarks print, they never assert; DESIGN.md, "Performance").
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    names = (m.name for m in pkgutil.iter_modules([str(here)]))
    return sorted(n.removeprefix("bench_") for n in names if n.startswith("bench_"))


def main(argv: list[str]) -> int:
    names = available()
    wanted = argv or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        sys.stderr.write(
            f"benchmarks: no such benchmark: {', '.join(unknown)} (have: {', '.join(names)})\n"
        )
        return 2
    for i, name in enumerate(wanted):
        if i:
            print()
        importlib.import_module(f"benchmarks.bench_{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
