"""Counting the linear map's leaves by size and its tables by level (arch side).

Observes ``swapper_pg_dir`` the way the MMU sees it (the bits in simulated RAM), for
``[PAGE_OFFSET, PAGE_END)``: 1 GiB blocks (level 1), 2 MiB blocks (level 2) and 4 KiB
pages (level 3); a naturally aligned run of 16 entries with the contiguous bit counts
once, as ``32M`` (level 2) or ``64K`` (level 3), the others as ``2M``/``4K``. Tables
are gathered by a walk that touches only table entries in Python; the leaves of each
level are classified with numpy over chunks of whole tables, never one object per
descriptor. :func:`kernel_tables` is the shared walk (also used by the ptdump report).
It lives in the arch layer so that kpkeys' composition time series
(:mod:`kpsim.kpkeys.timeline`) can sample it; :mod:`kpsim.report.linear_map`
re-exports it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kpsim.arch.arm64.memory import PAGE_END, PAGE_OFFSET
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.physmem import PhysicalMemory

KERNEL_HALF = (1 << 64) - (1 << 48)
SIZE_KEYS = ("1G", "32M", "2M", "64K", "4K")
CHUNK = 1024  # tables per numpy batch

Words = npt.NDArray[np.uint64]
# (base VA of the table's entry 0, first index, last index + 1, the table's words)
TableSlice = tuple[int, int, int, Words]


def kernel_tables(mem: PhysicalMemory, root_pa: int, lo: int, hi: int) -> list[list[TableSlice]]:
    """Every table of the tree at ``root_pa`` reached from [lo, hi), by level (0..3),
    each clipped to the entries inside the range."""
    out: list[list[TableSlice]] = [[], [], [], []]
    frontier = [(root_pa, KERNEL_HALF)]
    for level in range(4):
        shift = d.LEVEL_SHIFT[level]
        nxt: list[tuple[int, int]] = []
        for table_pa, base in frontier:
            i0 = max(0, (lo - base) >> shift) if lo > base else 0
            i1 = min(512, ((hi - base - 1) >> shift) + 1)
            if i0 >= i1:
                continue
            words = mem.frame_ro(table_pa >> 12)
            out[level].append((base, i0, i1, words))
            if level == 3:
                continue
            vals = words[i0:i1]
            for j in np.flatnonzero((vals & np.uint64(3)) == np.uint64(3)):
                i = i0 + int(j)
                nxt.append((int(vals[j]) & d.OA_MASK, base + (i << shift)))
        frontier = nxt
    return out


def _concat(slices: list[TableSlice]) -> Words:
    if not slices:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([w[i0:i1] for _b, i0, i1, w in slices])


def _count_level(slices: list[TableSlice], level: int) -> tuple[int, int]:
    """(non-contiguous leaves, contiguous runs) among the leaves of one level."""
    single = runs = 0
    want = np.uint64(d.VALID | d.TYPE) if level == 3 else np.uint64(d.VALID)
    three = np.uint64(3)
    cont = np.uint64(d.CONT)
    for k in range(0, len(slices), CHUNK):
        vals = _concat(slices[k : k + CHUNK])
        leaf = (vals & three) == want
        is_cont = leaf & ((vals & cont) != 0)
        n_cont = int(np.count_nonzero(is_cont))
        single += int(np.count_nonzero(leaf)) - n_cont
        runs += n_cont // d.CONT_ENTRIES
    return single, runs


def linear_map_mappings(mem: PhysicalMemory, root_pa: int) -> dict[str, int]:
    """Leaf descriptors of the linear map by size (keys ``1G 32M 2M 64K 4K``)."""
    tables = kernel_tables(mem, root_pa, PAGE_OFFSET, PAGE_END)
    g1, _ = _count_level(tables[1], 1)
    m2, m32 = _count_level(tables[2], 2)
    k4, k64 = _count_level(tables[3], 3)
    return {"1G": g1, "32M": m32, "2M": m2, "64K": k64, "4K": k4}


def linear_map_tables(mem: PhysicalMemory, root_pa: int) -> dict[str, int]:
    """Table pages below the PGD that serve the linear map, by level."""
    tables = kernel_tables(mem, root_pa, PAGE_OFFSET, PAGE_END)
    return {d.LEVEL_NAME[lv]: len(tables[lv]) for lv in (1, 2, 3)}


SIZES = {"1G": 1 << 30, "32M": 32 << 20, "2M": 2 << 20, "64K": 64 << 10, "4K": 4 << 10}


def mapped_bytes(mappings: dict[str, int]) -> int:
    """Bytes covered by a ``linear_map_mappings`` result."""
    return sum(SIZES[key] * n for key, n in mappings.items())


def block_bytes_fraction(mappings: dict[str, int]) -> float:
    """The share of mapped bytes in leaves of 2 MiB or larger (1G, 32M, 2M)."""
    total = mapped_bytes(mappings)
    big = sum(SIZES[key] * mappings.get(key, 0) for key in ("1G", "32M", "2M"))
    return big / total if total else 0.0
