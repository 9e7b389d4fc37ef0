"""Counting the direct map's leaves by size and its tables by level (arch side).

Observes ``swapper_pg_dir`` the way the MMU sees it (the bits in simulated RAM) for
``[PAGE_OFFSET, PAGE_END)``: 1 GiB pages (PS in a PDPTE), 2 MiB pages (PS in a PDE) and
4 KiB PTEs; the same keys as arm64's linear-map counters (``32M`` and ``64K``, the
contiguous-hint sizes, are always 0 on x86), so reports and the kpkeys timeline read
both alike. Unlike ``arch_report_meminfo`` (``direct_pages_count``, the kernel's own
bookkeeping), this counts what is in the tables: the two must agree.
"""

from __future__ import annotations

import numpy as np

from kpsim.arch.x86.memory import PAGE_END, PAGE_OFFSET
from kpsim.arch.x86.pgtable import LEVEL_SHIFT, PTE_PFN_MASK
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e

_P = np.uint64(e.P)
_PS = np.uint64(e.P | e.PS)


def direct_map_tables(mem: PhysicalMemory, root_pa: int) -> list[list[tuple[int, int, int, int]]]:
    """(table pa, base va, first index, end index) of every table below the PGD serving
    the direct map, by Linux level (index 1 PUD .. 3 PTE; index 0: the PGD itself)."""
    out: list[list[tuple[int, int, int, int]]] = [[], [], [], []]
    frontier = [(root_pa, (1 << 64) - (1 << 48))]
    for level in range(4):
        shift = LEVEL_SHIFT[level]
        nxt: list[tuple[int, int]] = []
        for table_pa, base in frontier:
            lo, hi = max(PAGE_OFFSET, base), min(PAGE_END, base + (512 << shift))
            if lo >= hi:
                continue
            i0, i1 = (lo - base) >> shift, ((hi - base - 1) >> shift) + 1
            out[level].append((table_pa, base, i0, i1))
            if level == 3:
                continue
            vals = mem.frame_ro(table_pa >> 12)[i0:i1]
            tables = (vals & _P) != 0
            if level in (1, 2):
                tables &= (vals & np.uint64(e.PS)) == 0
            for j in np.flatnonzero(tables).tolist():
                nxt.append((int(vals[j]) & PTE_PFN_MASK, base + ((i0 + j) << shift)))
        frontier = nxt
    return out


def direct_map_mappings(mem: PhysicalMemory, root_pa: int) -> dict[str, int]:
    """Leaves of the direct map by size (keys ``1G 32M 2M 64K 4K``)."""
    counts = {"1G": 0, "32M": 0, "2M": 0, "64K": 0, "4K": 0}
    key = {1: "1G", 2: "2M", 3: "4K"}
    for level, tables in enumerate(direct_map_tables(mem, root_pa)):
        if level == 0:
            continue
        for table_pa, _base, i0, i1 in tables:
            vals = mem.frame_ro(table_pa >> 12)[i0:i1]
            if level == 3:
                n = int(np.count_nonzero((vals & _P) != 0))
            else:
                n = int(np.count_nonzero((vals & _PS) == _PS))
            counts[key[level]] += n
    return counts


def direct_map_table_counts(mem: PhysicalMemory, root_pa: int) -> dict[str, int]:
    """Table pages below the PGD that serve the direct map, by level."""
    tables = direct_map_tables(mem, root_pa)
    return {"pud": len(tables[1]), "pmd": len(tables[2]), "pte": len(tables[3])}
