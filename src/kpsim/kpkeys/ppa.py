"""The pkeys physmem allocator (PPA) for early page tables (v7 13/24; spec §4.4).

Before the buddy allocator exists, page tables (notably the linear map's) come from
memblock one page at a time. Keying them at allocation would mean changing the
linear map while it is being built, so the PPA records the ranges it hands out
(growing the last range when a page is adjacent to it, above or below) and keys them
all in ``ppa_finalize()``. If the range array (``PHYSMEM_MAX_RANGES``) is full, it
WARNs and the page stays unprotected. PPA pages are never freed.
"""

from __future__ import annotations

from collections.abc import Callable

from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_PGTABLES

PHYSMEM_MAX_RANGES = 1024  # INIT_MEMBLOCK_MEMORY_REGIONS ("16KB on arm64")


class PhysmemAllocator:
    __slots__ = ("k", "max_ranges", "ranges", "untracked")

    def __init__(self, k: Kernel, max_ranges: int = PHYSMEM_MAX_RANGES) -> None:
        self.k = k
        self.max_ranges = max_ranges
        self.ranges: list[list[int]] = []  # [start_pa, end_pa)
        self.untracked: list[int] = []

    def kpkeys_physmem_pgtable_alloc(self) -> int:
        """One zeroed page from memblock, its range recorded; 0 on failure."""
        pa: int = self.k.memblock.memblock_phys_alloc(4096, 4096)
        if not pa:
            return 0
        self.k.mem.zero_frame(pa >> 12)
        if self.ranges:
            last = self.ranges[-1]
            if pa == last[1]:
                last[1] += 4096
                return pa
            if pa + 4096 == last[0]:
                last[0] = pa
                return pa
        if len(self.ranges) >= self.max_ranges:
            self.k.warn("kpkeys_physmem_pgtable_alloc", "range array full: page left unkeyed")
            self.untracked.append(pa)
            return pa
        self.ranges.append([pa, pa + 4096])
        return pa

    def ppa_finalize(
        self, set_memory_pkey: Callable[[int, int, int], int], phys_to_virt: Callable[[int], int]
    ) -> None:
        """Key every recorded range with one ``set_memory_pkey`` call each."""
        for start, end in self.ranges:
            ret = set_memory_pkey(phys_to_virt(start), (end - start) >> 12, KPKEYS_PKEY_PGTABLES)
            if ret:
                self.k.warn("ppa_finalize", f"set_memory_pkey failed ({ret}) for {start:#x}")
