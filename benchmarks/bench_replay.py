"""Trace replay throughput: trace events replayed per second (issue 8, target 200,000).

Replays each committed pid/tid-layout trace under ``tests/data/traces`` on a fresh
1 GiB, 2-CPU machine (hardened page tables on, the default) and reports:

- ``replay``: trace records / seconds of :meth:`Replayer.run` (the operations are
  resolved beforehand; parsing is timed separately); ``unbatched``: the same with
  runs of faults replayed one fault at a time (``Replayer(batching=False)``);
- ``engine only``: the same replay with the fault handler (and runs of faults)
  replaced by a no-op, i.e. the replay engine's own cost (dispatch, task and mm
  lookup, kernel entries) plus the non-fault operations; the per-fault dispatch cost
  is this minus a replay of the non-fault operations alone, divided by the faults;
- native baselines timed in the same run: ``parse_lines`` + ``memory_ops`` over the
  same records, and the real program's own run time under perf (the span of the
  trace's timestamps).

Each figure is the best of 3 runs. Printed, never asserted.

Run: ``python -m benchmarks replay`` or ``python -m benchmarks.bench_replay``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kpsim.machine import boot
from kpsim.mm.mm_types import MmStruct
from kpsim.workloads.replay import Replayer
from kpsim.workloads.trace import Event, MemOp, memory_ops, parse_lines

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
TARGET = 200_000
RUNS = 3


class _NoFaults(Replayer):
    """The replay engine with the model's fault handling left out."""

    def _fault_in(self, mm: MmStruct, addr: int, error_code: int) -> None:
        return None

    def _flush_run(self, mm: Any, pend: list[tuple[int, int]], step: int) -> None:
        return None


def _replay_time(ops: list[MemOp], cls: type[Replayer], **kw: Any) -> float:
    best = float("inf")
    for _ in range(RUNS):
        m: Any = boot(memory="1G", cpus=2)
        r = cls(m, **kw)
        t0 = time.perf_counter()
        r.run(ops)
        best = min(best, time.perf_counter() - t0)
    return best


def _parse_time(lines: list[str]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        t0 = time.perf_counter()
        sum(1 for _ in memory_ops(list(parse_lines(lines))))
        best = min(best, time.perf_counter() - t0)
    return best


def _span(events: list[Event]) -> float:
    return events[-1].time - events[0].time if events else 0.0


def main() -> dict[str, float]:
    paths = [p for p in sorted(TRACES.glob("*.trace")) if not p.name.endswith(".default.trace")]
    if not paths:
        raise SystemExit(f"bench_replay: no traces under {TRACES}")
    print(f"trace replay (1 GiB, 2 CPUs, hardened page tables on; best of {RUNS})")
    head = f"  {'trace':<28} {'records':>8} {'faults':>7} {'replay ev/s':>12}"
    print(head + f" {'unbatched':>10} {'engine ev/s':>12} {'parse ev/s':>11} {'x real':>7}")
    tot: dict[str, float] = {"n": 0, "faults": 0, "replay": 0.0, "engine": 0.0, "parse": 0.0}
    tot["real"] = 0.0
    tot["nofault"] = tot["single"] = 0.0
    for path in paths:
        lines = path.read_text().splitlines(keepends=True)
        events = list(parse_lines(lines))
        ops = list(memory_ops(events))
        n = len(events)
        faults = sum(1 for e in ops if type(e).__name__ == "Fault")
        replay = _replay_time(ops, Replayer)
        single = _replay_time(ops, Replayer, batching=False)
        engine = _replay_time(ops, _NoFaults)
        nofault = _replay_time([o for o in ops if type(o).__name__ != "Fault"], _NoFaults)
        parse = _parse_time(lines)
        real = _span(events)
        for k, v in (("n", n), ("faults", faults), ("replay", replay), ("engine", engine)):
            tot[k] += v
        tot["parse"] += parse
        tot["nofault"] += nofault
        tot["single"] += single
        tot["real"] += real
        print(
            f"  {path.name:<28} {n:>8,} {faults:>7,} {n / replay:>12,.0f} {n / single:>10,.0f}"
            f" {n / engine:>12,.0f}"
            f" {n / parse:>11,.0f} {replay / real if real else 0:>7.1f}"
        )
    n = int(tot["n"])
    per_fault = (tot["replay"] - tot["engine"]) / max(tot["faults"], 1)
    print(
        f"  {'all':<28} {n:>8,} {tot['faults']:>7,.0f} {n / tot['replay']:>12,.0f}"
        f" {n / tot['single']:>10,.0f}"
        f" {n / tot['engine']:>12,.0f} {n / tot['parse']:>11,.0f}"
        f" {tot['replay'] / tot['real']:>7.1f}"
    )
    print(
        f"  replay: {n / tot['replay']:,.0f} events/s (target {TARGET:,}); "
        f"{tot['replay'] / tot['parse']:.1f}x the time parsing takes; "
        f"{tot['replay'] / tot['real']:.1f}x the real programs' run time under perf"
    )
    dispatch = (tot["engine"] - tot["nofault"]) / max(tot["faults"], 1)
    print(
        f"  engine dispatch {1e6 * dispatch:.2f} us/fault; model fault handling "
        f"{1e6 * per_fault:.1f} us/fault; other operations (mmap, exit, fork...) "
        f"{1e6 * tot['nofault'] / max(n - tot['faults'], 1):.1f} us each"
    )
    return {
        "replay, events/s (issue 14: >= 200,000)": n / tot["replay"],
        "parse, events/s": n / tot["parse"],
        "model fault handling, us/fault": 1e6 * per_fault,
    }


if __name__ == "__main__":
    main()
