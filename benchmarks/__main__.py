"""Run the benchmarks: ``python -m benchmarks`` (all) or ``python -m benchmarks hw``.

Every ``benchmarks/bench_*.py`` module exposes ``main()``, which measures and prints
its figures (benchmarks print, they never assert; DESIGN.md, "Performance"); a
``main()`` that returns a dict of headline figures gets them in the summary table.

``--mode both`` (the default) runs each benchmark twice, in fresh processes: with the
compiled core (``src/kpsim/_core.py``; pure Python when there is no current build, as
the header says) and with ``KPSIM_PURE=1``, then prints the headline figures side by
side. ``--mode here`` runs them once in this process, as it is.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    names = (m.name for m in pkgutil.iter_modules([str(here)]))
    return sorted(n.removeprefix("bench_") for n in names if n.startswith("bench_"))


def _run_here(names: list[str], figures: str | None) -> int:
    from kpsim import _core

    print(f"[kpsim core: {_core.STATE}]")
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        if i:
            print()
        got = importlib.import_module(f"benchmarks.bench_{name}").main()
        if isinstance(got, dict):
            out[name] = {str(k): float(v) for k, v in got.items()}
    if figures:
        Path(figures).write_text(json.dumps(out))
    return 0


def _run_child(name: str, pure: bool, figures: Path) -> tuple[int, dict[str, float]]:
    env = dict(os.environ)
    env.pop("KPSIM_PURE", None)
    if pure:
        env["KPSIM_PURE"] = "1"
    cmd = [sys.executable, "-m", "benchmarks", "--mode", "here", "--figures", str(figures), name]
    sys.stdout.flush()
    rc = subprocess.run(cmd, env=env, check=False).returncode
    try:
        got = json.loads(figures.read_text()).get(name, {})
    except (OSError, ValueError):
        got = {}
    return rc, got


def _fmt(v: float | None) -> str:
    if v is None:
        return f"{'-':>14}"
    return f"{v:>14,.0f}" if abs(v) >= 100 else f"{v:>14.3g}"


def _summary(rows: list[tuple[str, str, float | None, float | None]]) -> None:
    print("\nheadline figures: compiled core | pure Python (fresh processes, same run)")
    print(f"  {'benchmark':<10} {'figure':<44} {'compiled':>14} {'pure':>14} {'c/p':>6}")
    for bench, fig, c, p in rows:
        cs, ps = _fmt(c), _fmt(p)
        ratio = f"{c / p:>6.2f}" if c is not None and p else f"{'-':>6}"
        print(f"  {bench:<10} {fig:<44} {cs} {ps} {ratio}")


def main(argv: list[str]) -> int:
    names = available()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("both", "here"), default="both")
    ap.add_argument("--figures", help=argparse.SUPPRESS)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(names)}")
    args = ap.parse_args(argv)
    wanted = args.names or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        sys.stderr.write(
            f"benchmarks: no such benchmark: {', '.join(unknown)} (have: {', '.join(names)})\n"
        )
        return 2
    if args.mode == "here":
        return _run_here(wanted, args.figures)
    rows: list[tuple[str, str, float | None, float | None]] = []
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            got: list[dict[str, float]] = []
            for pure in (False, True):
                label = "pure Python (KPSIM_PURE=1)" if pure else "compiled core"
                print(f"\n== {name}: {label} ==")
                rc, figs = _run_child(name, pure, Path(tmp) / f"{name}-{int(pure)}.json")
                status = status or rc
                got.append(figs)
            for fig in dict.fromkeys([*got[0], *got[1]]):
                rows.append((name, fig, got[0].get(fig), got[1].get(fig)))
    _summary(rows)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
