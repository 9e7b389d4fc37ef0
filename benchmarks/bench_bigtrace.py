"""A large real trace end to end (issue 14): a recorded build of a real project, parsed
and replayed, next to the build's own run time.

The project is kpsim's compiled core: ``tools/build_core.py --force`` (mypyc, then gcc
on every module, two jobs) run on a copy of this tree under ``kpsim record --vmpte``,
which gives about 1.6 million trace records from some 550 processes (gcc, cc1, as, ld,
python), each process's VmPTE at exit and its argument area. ``KPSIM_BIG_TRACE=FILE``
replays FILE (with its ``FILE.vmpte.json`` and ``FILE.args.json`` if there are)
instead of recording; without perf, or not as root, and without that variable, the
benchmark says so and measures nothing.

Figures, each timed once (the trace is too large to repeat): records; parse seconds
(``read_trace``); replay seconds (``replay_events`` on a fresh 8 GiB, 2-CPU machine,
hardened page tables on); end-to-end events per second (parse + replay; target
200,000); the ratio of parse + replay to the build's own run time under perf (the
span of the trace's timestamps: the native baseline, measured in the same run), and
how many processes' replayed page-table pages at exit equal the live VmPTE.
Printed, never asserted.

Run: ``python -m benchmarks bigtrace`` or ``python -m benchmarks.bench_bigtrace``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kpsim.machine import boot
from kpsim.workloads.replay import replay_events
from kpsim.workloads.trace import read_trace
from kpsim.workloads.trace_record import read_arg_areas, read_vmpte

ROOT = Path(__file__).resolve().parent.parent
TARGET = 200_000


def _record(work: Path) -> Path | None:
    """Record the compiled core's build of a copy of this tree into ``work``; the trace
    path, or None (with a line saying why) when this host cannot record."""
    if shutil.which("perf") is None or os.geteuid() != 0:
        print("  bigtrace: recording needs perf and root (or KPSIM_BIG_TRACE=FILE): skipped")
        return None
    tree = work / "tree"
    for part in ("src", "tools"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    trace = work / "build.trace"
    cmd = [sys.executable, "-m", "kpsim.cli.main", "record", "-o", str(trace), "--vmpte",
           "--", sys.executable, "tools/build_core.py", "--force", "--jobs", "2"]  # fmt: skip
    print("  recording: kpsim record --vmpte -- python tools/build_core.py --force --jobs 2")
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not trace.exists():
        print(f"  bigtrace: recording failed (status {done.returncode}): {done.stderr[-300:]}")
        return None
    return trace


def _areas(trace: Path) -> dict[int, tuple[int, int]] | None:
    side = Path(f"{trace}.args.json")
    return read_arg_areas(side) if side.exists() else None


def _live(trace: Path) -> dict[int, int]:
    side = Path(f"{trace}.vmpte.json")
    return read_vmpte(side) if side.exists() else {}


def main() -> dict[str, float]:
    print("a large real trace end to end (8 GiB, 2 CPUs, hardened page tables on; timed once)")
    given = os.environ.get("KPSIM_BIG_TRACE")
    with tempfile.TemporaryDirectory(prefix="kpsim-bigtrace-") as tmp:
        trace = Path(given) if given else _record(Path(tmp))
        if trace is None:
            return {}
        t0 = time.perf_counter()
        events = read_trace(trace)
        parse = time.perf_counter() - t0
        m = boot(memory="8G", cpus=2)
        t1 = time.perf_counter()
        res = replay_events(m, events, file=str(trace), arg_areas=_areas(trace))
        replay = time.perf_counter() - t1
        live = _live(trace)
    n = len(events)
    faults = res.ops.get("Fault", 0)
    real = events[-1].time - events[0].time if events else 0.0
    procs = [p.as_dict() for p in res.processes]
    compared = [p for p in procs if p["pid"] in live]
    agree = sum(1 for p in compared if p["pt_pages_at_exit"] == live[p["pid"]])
    total = parse + replay
    print(f"  trace: {trace.name}, {n:,} records, {faults:,} faults, {len(procs)} processes")
    print(f"  parse {parse:.1f} s ({n / parse:,.0f} records/s), replay {replay:.1f} s "
          f"({n / replay:,.0f} events/s)")  # fmt: skip
    print(f"  end to end: {n / total:,.0f} events/s (target {TARGET:,}); "
          f"{total / real if real else 0:.2f}x the build's own run time under perf "
          f"({real:.1f} s)")  # fmt: skip
    if compared:
        differ = [(p["pid"], p["comm"], p["pt_pages_at_exit"], live[p["pid"]])
                  for p in compared if p["pt_pages_at_exit"] != live[p["pid"]]]  # fmt: skip
        shown = f"; differ (pid, comm, model, live): {differ[:5]}" if differ else ""
        print(f"  page-table pages at exit equal to the live VmPTE: {agree} of {len(compared)} "
              f"processes{shown}")  # fmt: skip
    return {
        "big trace, records": float(n),
        "big trace end to end, events/s": n / total,
        "big trace, x the build's run time": total / real if real else 0.0,
    }


if __name__ == "__main__":
    main()
