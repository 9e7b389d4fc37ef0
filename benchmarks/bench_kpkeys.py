"""kpkeys_hardened_pgtables: the batching effect on fork, and the model's own speed.

1. Fork of a process with 1 GiB touched (4 GiB machine), batching on and off: POR_EL1
   writes per copied table page and per written entry, from the machine's counters
   (``por_writes``, ``pte_write``, ``set_memory_pkey``, ``pgtable_alloc``). The series
   says about 2 per table with batching and 2 per entry without (spec §4.9).
2. The model's own speed with the feature on vs off, on the mixed workload of
   ``kpsim audit`` and on a fork/munmap-heavy one (best of a few alternating runs, each
   on a freshly booted machine; boot not timed; CPU and wall time). Target: on/off
   within 1.5x. A native fork + munmap of 1 GiB on this host is measured in the same
   run as the baseline the simulated figures are quoted against.

``python -m benchmarks kpkeys`` (``KPSIM_BENCH_QUICK=1``: 256 MiB instead of 1 GiB).
Benchmarks print; they never assert.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from benchmarks.bench_user import native_fork_and_munmap
from kpsim.machine import Machine, boot
from kpsim.mm.process import Process
from kpsim.workloads.mixed import mixed_workload

MiB, GiB = 1 << 20, 1 << 30
QUICK = bool(os.environ.get("KPSIM_BENCH_QUICK"))


def fork_figures(size: int, batching: bool) -> dict[str, float]:
    m = boot(memory="4G", batching=batching)
    p = Process.create(m, "parent")
    a = p.mmap(None, size)
    p.touch_range(a, size, write=True)
    c0 = m.counters
    t = time.perf_counter()
    child = p.fork(cpu=1)
    dt = time.perf_counter() - t
    c1 = m.counters
    d = {k: c1[k] - c0.get(k, 0) for k in c1}
    tables = d["pgtable_alloc"]
    pte_tables = len(child.mm.tables[3])
    keying = 2 * d["set_memory_pkey"]
    linking = 2 * (tables - 1)
    return {
        "fork_s": dt,
        "tables": tables,
        "pte_tables": pte_tables,
        "entries": d["pte_write"],
        "por_writes": d["por_writes"],
        "isb": d["isb"],
        "per_table": d["por_writes"] / tables,
        "copy_per_pte_table": (d["por_writes"] - keying - linking) / pte_tables,
        "per_entry": d["por_writes"] / d["pte_write"],
    }


def fork_munmap_heavy(m: Machine) -> None:
    size = 64 * MiB if QUICK else 256 * MiB
    p = Process.create(m, "fm")
    for _ in range(2):
        a = p.mmap(None, size)
        p.touch_range(a, size, stride=2 * 4096, write=True)
        child = p.fork(cpu=1)
        child.touch_range(a, 16 * MiB, stride=4 * 4096, write=True)
        child.munmap(a + 8 * MiB, 32 * MiB)
        child.exit()
        p.munmap(a, size // 2)
        p.munmap(a + size // 2, size // 2)
    p.exit()


def mixed(m: Machine) -> None:
    mixed_workload(m, seed=0, scale=2 if QUICK else 4)


def timed(fn: Callable[[Machine], None], hardened: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn`` on a freshly booted 2G machine."""
    m = boot(memory="2G", hardened_pgtables=hardened)
    c, w = time.process_time(), time.perf_counter()
    fn(m)
    return time.process_time() - c, time.perf_counter() - w


def main() -> None:
    size = 256 * MiB if QUICK else GiB
    print(f"kpkeys: fork of {size >> 20} MiB touched (4G machine)")
    rows = {b: fork_figures(size, b) for b in (True, False)}
    print(
        f"  {'batching':9} {'tables':>7} {'entries':>9} {'por_writes':>11} "
        f"{'/table':>8} {'copy/PTE-table':>15} {'/entry':>7} {'fork s':>7}"
    )
    for b, r in rows.items():
        print(
            f"  {'on' if b else 'off':9} {r['tables']:7.0f} {r['entries']:9.0f} "
            f"{r['por_writes']:11.0f} {r['per_table']:8.2f} {r['copy_per_pte_table']:15.2f} "
            f"{r['per_entry']:7.3f} {r['fork_s']:7.3f}"
        )
    print(
        "  (/table: all register writes / tables the child got (keying 2 + link 2 + copy); "
        "copy/PTE-table: those of the entry copy only)"
    )
    native_fork, native_munmap = native_fork_and_munmap(size)
    print(f"  native fork of {size >> 20} MiB on this host: {native_fork * 1e3:.2f} ms (baseline)")
    print(
        f"  simulated fork / native: {rows[True]['fork_s'] / native_fork:.2f}x (batching on), "
        f"{rows[False]['fork_s'] / native_fork:.2f}x (off)"
    )
    print()
    reps = 2 if QUICK else 3
    print(
        f"kpkeys: the model's own speed, feature on vs off (best of {reps} alternating runs, "
        "2G machines; CPU time of this process, which the other load on the host disturbs "
        "less than wall time)"
    )
    for name, fn in (("mixed", mixed), ("fork_munmap", fork_munmap_heavy)):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(reps):
            for hardened in (False, True):
                runs[hardened].append(timed(fn, hardened))
        off_c, on_c = min(c for c, _ in runs[False]), min(c for c, _ in runs[True])
        off_w, on_w = min(w for _, w in runs[False]), min(w for _, w in runs[True])
        print(
            f"  {name:12} cpu off {off_c:6.3f} s  on {on_c:6.3f} s  on/off {on_c / off_c:4.2f}x"
            f"   | wall off {off_w:6.3f} s  on {on_w:6.3f} s  on/off {on_w / off_w:4.2f}x"
        )
    print(
        f"  native munmap of {size >> 20} MiB on this host: {native_munmap * 1e3:.2f} ms "
        "(baseline; the simulated workloads above do far more than one munmap)"
    )
