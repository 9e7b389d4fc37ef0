"""Hardware model throughput: MMU-checked 64-bit stores and table walks per second.

Each figure is also given as a ratio to a bare numpy element store (``frame[i] = v``
from Python) timed in the same run on the same machine, so that it reads as "how
many times the cost of the cheapest Python-level store", not as a noisy absolute.

The stores go through the full access path of ``Cpu.store`` at EL1 with the
overlay enabled (TCR2_EL1.POE, POR_EL1 = 0x57) to a pkey-1 page, as a page-table
write in the kpkeys_hardened_pgtables context does. Targets (issue 2): at least
1,000,000 stores/s on a TLB hit and 200,000 walks/s. Figures are printed, never
asserted.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.arm64.mmu import walk, walk_entry
from kpsim.hw.arm64.system import Arm64System
from kpsim.hw.physmem import PhysicalMemory

DRAM = 0x4000_0000
VA = 0xFFFF_8000_1234_5000
TARGET_HIT = 1_000_000
TARGET_WALK = 200_000


def machine() -> tuple[Cpu, int]:
    """One CPU, a 4-level kernel mapping of VA to a pkey-1 page, POE on at POR 0x57."""
    mem = PhysicalMemory(DRAM, 1 << 30)
    cpu = Arm64System(mem, 1).cpus[0]
    tables = [DRAM + i * 0x1000 for i in range(4)]
    for level, (table, nxt) in enumerate(itertools.pairwise(tables)):
        index = (VA >> d.LEVEL_SHIFT[level]) & 0x1FF
        mem.write64(table + 8 * index, d.table_desc(nxt))
    mem.write64(tables[3] + 8 * ((VA >> 12) & 0x1FF), d.leaf_desc(DRAM + 0x10_0000, 3, poindex=1))
    cpu.ttbr1 = tables[0]
    cpu.write_por_el1(0x57)
    cpu.set_tcr2(poe=True, e0poe=True)
    cpu.isb()
    return cpu, tables[0]


def best_per_op(loop: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs of ``loop(n)``, in seconds per operation."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loop(n)
        times.append(time.perf_counter() - t0)
    return min(times) / n


def numpy_store(n: int) -> None:
    frame = np.zeros(512, dtype=np.uint64)
    for i in range(n):
        frame[5] = i


def mmu_store_hit(cpu: Cpu) -> Callable[[int], None]:
    store = cpu.store

    def loop(n: int) -> None:
        store(VA, 0)  # fill the TLB once
        for i in range(n):
            store(VA + 40, i)

    return loop


def mmu_store_walk(cpu: Cpu) -> Callable[[int], None]:
    store, tlbi = cpu.store, cpu.tlbi_va

    def loop(n: int) -> None:
        for i in range(n):
            tlbi(VA)
            store(VA + 40, i)

    return loop


def bare_walk(cpu: Cpu, root: int) -> Callable[[int], None]:
    mem = cpu.mem

    def loop(n: int) -> None:
        for _ in range(n):
            walk(mem, root, VA, write=True)

    return loop


def fill_walk(cpu: Cpu, root: int) -> Callable[[int], None]:
    mem = cpu.mem

    def loop(n: int) -> None:
        for _ in range(n):
            walk_entry(mem, root, VA)

    return loop


def measure() -> dict[str, float]:
    """Seconds per operation for each figure, all in this process."""
    cpu, root = machine()
    out = {
        "numpy": best_per_op(numpy_store, 200_000),
        "hit": best_per_op(mmu_store_hit(cpu), 200_000),
        "miss": best_per_op(mmu_store_walk(cpu), 50_000),
        "walk": best_per_op(bare_walk(cpu, root), 50_000),
        "fill": best_per_op(fill_walk(cpu, root), 50_000),
    }
    assert cpu.walks > 0 and cpu.tlb_hits > 0  # the loops took the paths they claim
    return out


def main() -> dict[str, float]:
    t = measure()
    rows = [
        ("bare numpy element store", t["numpy"], None),
        ("MMU store, TLB hit", t["hit"], TARGET_HIT),
        ("MMU store after TLBI (miss + walk)", t["miss"], None),
        ("table walk (4 levels)", t["walk"], TARGET_WALK),
        ("TLB-fill walk (walk_entry, 4 levels)", t["fill"], TARGET_WALK),
    ]
    print("hw: MMU-checked 64-bit stores (EL1, overlay on, pkey-1 page) and walks")
    print(f"  {'figure':<36} {'ops/s':>12} {'vs numpy':>9}  target")
    for name, per_op, target in rows:
        rate = 1 / per_op
        ratio = per_op / t["numpy"]
        goal = "" if target is None else f">= {target:,} ({'met' if rate >= target else 'MISSED'})"
        print(f"  {name:<36} {rate:>12,.0f} {ratio:>8.1f}x  {goal}")
    return {name: 1 / per_op for name, per_op, _ in rows}


if __name__ == "__main__":
    main()
