"""x86-64 boot-time page tables: the kernel image mapping and the direct map.

Models ``arch/x86/kernel/head_64.S`` (the static ``init_top_pgt``,
``level3_kernel_pgt`` and ``level2_kernel_pgt``: the image mapped at
``__START_KERNEL_map`` with 2 MiB pages, trimmed to the image by ``cleanup_highmap``),
``arch/x86/mm/init.c`` (``init_mem_mapping``: the ISA range ``[0, 1M)`` first, then the
rest of memory; ``init_memory_mapping`` -> ``split_mem_range``: a 4 KiB head up to the
first 2 MiB boundary, 2 MiB pages up to the first 1 GiB boundary, 1 GiB pages, a 2 MiB
tail and a 4 KiB tail, with ``adjust_range_page_size_mask`` widening a range whose
rounded span is all RAM) and ``arch/x86/mm/init_64.c`` (``kernel_physical_mapping_init``
-> ``phys_pud_init``/``phys_pmd_init``/``phys_pte_init``, an existing table reused,
``update_page_count`` per level; ``mark_rodata_ro``).

Memory is RAM from physical 0 with the E820 ISA hole ``[640K, 1M)`` (no PCI hole below
4 GiB, no other reserved ranges; the first 1 MiB is reserved, as ``x86_reserve_low``
does). The ISA range is mapped whole, hole included, with 4 KiB pages (its rounded span
is not all RAM), and so is the rest of the first 2 MiB. Large pages follow
``probe_page_size_mask``: 2 MiB (PSE) and 1 GiB
(``direct_gbpages``) with ``linear_map="block"``; only 4 KiB with ``"pte"`` (as with
``debug_pagealloc``). Tables come from the early allocator passed in (memblock, or
kpkeys' PPA), Linux's ``alloc_low_pages`` (brk, then memblock).

Image layout (sizes chosen by kpsim): 16 MiB at 16 MiB physical (``CONFIG_PHYSICAL_START``):
text [0, 8M), rodata [8M, 12M), data [12M, 16M) whose last pages hold the static
tables (``init_top_pgt`` = ``swapper_pg_dir`` is in .data on x86, writable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.x86.memory import (
    ISA_END_ADDRESS,
    PAGE_OFFSET,
    START_KERNEL_MAP,
    STRUCT_PAGE_SIZE,
    VMEMMAP_START,
)
from kpsim.arch.x86.pgtable import (
    KERNPG_TABLE,
    PAGE_KERNEL,
    PAGE_KERNEL_EXEC,
    PTE_PFN_MASK,
    large_prot,
)
from kpsim.arch.x86.set_memory import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, SetMemoryMixin
from kpsim.hw.x86 import pte as e
from kpsim.mm.pgtable import TableInfo
from kpsim.units import SZ_1G, SZ_2M

KIMAGE_SIZE = 16 << 20
TEXT_SIZE = 8 << 20
RODATA_SIZE = 4 << 20
RODATA_OFFSET = TEXT_SIZE
DATA_OFFSET = TEXT_SIZE + RODATA_SIZE
#: the static tables at the end of .data: init_top_pgt, level3_kernel_pgt, level2_kernel_pgt
STATIC_TABLES = ("init_top_pgt", "level3_kernel_pgt", "level2_kernel_pgt")
EarlyAlloc = Callable[[int], int]
_ARANGE = np.arange(512, dtype=np.uint64)


def split_mem_range(start: int, end: int, large: bool, gbpages: bool) -> list[tuple[int, int, int]]:
    """``split_mem_range``: (start, end, page-size mask) ranges; the mask holds
    ``1 << PG_LEVEL_2M`` and ``1 << PG_LEVEL_1G``. Adjacent ranges with the same mask
    are merged."""
    mask_2m = (1 << PG_LEVEL_2M) if large else 0
    mask_1g = mask_2m | ((1 << PG_LEVEL_1G) if large and gbpages else 0)
    out: list[tuple[int, int, int]] = []

    def add(lo: int, hi: int, mask: int) -> None:
        if lo < hi:
            out.append((lo, hi, mask))

    head_end = min(_round_up(start, SZ_2M), end)
    add(start, head_end, 0)
    pos = head_end
    big_end = min(_round_up(pos, SZ_1G), end & ~(SZ_2M - 1))
    add(pos, big_end, mask_2m)
    pos = max(pos, big_end)
    g_end = end & ~(SZ_1G - 1)
    add(pos, g_end, mask_1g)
    pos = max(pos, g_end)
    m_end = end & ~(SZ_2M - 1)
    add(pos, m_end, mask_2m)
    pos = max(pos, m_end)
    add(pos, end, 0)
    merged: list[tuple[int, int, int]] = []
    for r in out:
        if merged and merged[-1][1] == r[0] and merged[-1][2] == r[2]:
            merged[-1] = (merged[-1][0], r[1], r[2])
        else:
            merged.append(r)
    return merged


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


@mypyc_attr(native_class=False)  # see ArchBase
class InitMixin(SetMemoryMixin):
    kimage_pa: int
    kimage_size: int
    vmemmap_range: tuple[int, int, int]

    def _register_early(self, pa: int, level: int, source: str) -> None:
        self.k.pgtable.live[pa >> 12] = TableInfo(level, "kernel", source)
        self.k.counters["PageTables"] += 1

    def kimage_va(self, pa: int) -> int:
        return START_KERNEL_MAP + pa

    # -- head_64.S ---------------------------------------------------------------------
    def map_kernel(self) -> None:
        """The static tables: ``init_top_pgt[511]`` -> ``level3_kernel_pgt[510]`` ->
        ``level2_kernel_pgt``, 2 MiB ``PAGE_KERNEL_LARGE_EXEC`` leaves over the image
        only (``cleanup_highmap``). Written directly (before paging is ours)."""
        top = self.kimage_pa + self.kimage_size
        pgd, pud, pmd = (top - (i + 1) * 4096 for i in range(3))
        self.swapper_pg_dir = pgd
        for pa, level in ((pgd, 0), (pud, 1), (pmd, 2)):
            self._register_early(pa, level, "static")
            self.static_tables.append(pa)
        mem = self.k.mem
        va = START_KERNEL_MAP + self.kimage_pa
        mem.write64(pgd + (((va >> 39) & 0x1FF) << 3), pud | KERNPG_TABLE)
        mem.write64(pud + (((va >> 30) & 0x1FF) << 3), pmd | KERNPG_TABLE)
        i0 = (va >> 21) & 0x1FF
        n = self.kimage_size // SZ_2M
        vals = (np.uint64(self.kimage_pa) + (_ARANGE[:n] << np.uint64(21))) | np.uint64(
            large_prot(PAGE_KERNEL_EXEC)
        )
        mem.frame(pmd >> 12)[i0 : i0 + n] = vals

    # -- init_mem_mapping ----------------------------------------------------------------
    def init_mem_mapping(
        self, early_alloc: EarlyAlloc, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """The ISA range, then every memblock memory range above it."""
        large = self.linear_map_policy != "pte"
        self.init_memory_mapping(0, ISA_END_ADDRESS, early_alloc, large)
        total = sum(size for _b, size in self.k.memblock.memory_regions())
        done = ISA_END_ADDRESS
        for base, size in self.k.memblock.memory_regions():
            lo, hi = max(base, ISA_END_ADDRESS), base + size
            while lo < hi:  # a GiB at a time, for progress (the same ranges result)
                step = min(hi, (lo | (SZ_1G - 1)) + 1)
                self.init_memory_mapping(lo, step, early_alloc, large)
                done += step - lo
                lo = step
                if progress is not None:
                    progress(done, total)
        self.mapped_end = max(b + s for b, s in self.k.memblock.memory_regions())

    def init_memory_mapping(self, start: int, end: int, alloc: EarlyAlloc, large: bool) -> None:
        for lo, hi, mask in split_mem_range(start, end, large, gbpages=True):
            mask = self._adjust_range_page_size_mask(lo, hi, mask, large)
            self.kernel_physical_mapping_init(lo, hi, mask, alloc)

    def _adjust_range_page_size_mask(self, lo: int, hi: int, mask: int, large: bool) -> int:
        """``adjust_range_page_size_mask``: widen to 2M (1G) if the rounded span is RAM."""
        if not large:
            return mask
        for level, size in ((PG_LEVEL_2M, SZ_2M), (PG_LEVEL_1G, SZ_1G)):
            if mask & (1 << level):
                continue
            a, b = lo & ~(size - 1), _round_up(hi, size)
            if self._is_region_memory(a, b) and (level == PG_LEVEL_2M or mask & (1 << PG_LEVEL_2M)):
                mask |= 1 << level
        return mask

    def _is_region_memory(self, a: int, b: int) -> bool:
        return any(
            base <= a and b <= base + size for base, size in self.k.memblock.memory_regions()
        )

    def kernel_physical_mapping_init(
        self, paddr_start: int, paddr_end: int, page_size_mask: int, alloc: EarlyAlloc
    ) -> None:
        """Map ``[paddr_start, paddr_end)`` at ``__va``: one PGD entry (512 GiB) at a time."""
        mem = self.k.mem
        pgd = mem.frame(self.swapper_pg_dir >> 12)
        paddr = paddr_start
        while paddr < paddr_end:
            va = PAGE_OFFSET + paddr
            nxt = min(paddr_end, (paddr | ((1 << 39) - 1)) + 1)
            pud = self._child(pgd, (va >> 39) & 0x1FF, 0, alloc)
            self._phys_pud_init(pud, paddr, nxt, page_size_mask, alloc)
            paddr = nxt

    def _child(self, frame: Any, idx: int, level: int, alloc: EarlyAlloc) -> int:
        v = int(frame[idx])
        if v & e.P:
            return v & PTE_PFN_MASK
        child = alloc(level + 1)
        frame[idx] = child | KERNPG_TABLE
        return child

    def _phys_pud_init(
        self, pud_pa: int, paddr: int, end: int, mask: int, alloc: EarlyAlloc
    ) -> None:
        frame = self.k.mem.frame(pud_pa >> 12)
        pages = 0
        while paddr < end:
            idx = ((PAGE_OFFSET + paddr) >> 30) & 0x1FF
            nxt = min(end, (paddr | (SZ_1G - 1)) + 1)
            v = int(frame[idx])
            if v & e.P and v & e.PS:
                paddr = nxt  # already a 1 GiB page
                continue
            if not v & e.P and mask & (1 << PG_LEVEL_1G):
                frame[idx] = (paddr & ~(SZ_1G - 1)) | large_prot(PAGE_KERNEL)
                pages += 1
                paddr = (paddr | (SZ_1G - 1)) + 1
                continue
            pmd = self._child(frame, idx, 1, alloc)
            self._phys_pmd_init(pmd, paddr, nxt, mask, alloc)
            paddr = nxt
        self.update_page_count(PG_LEVEL_1G, pages)

    def _phys_pmd_init(
        self, pmd_pa: int, paddr: int, end: int, mask: int, alloc: EarlyAlloc
    ) -> None:
        frame = self.k.mem.frame(pmd_pa >> 12)
        pages = 0
        while paddr < end:
            idx = ((PAGE_OFFSET + paddr) >> 21) & 0x1FF
            nxt = min(end, (paddr | (SZ_2M - 1)) + 1)
            v = int(frame[idx])
            if v & e.P and v & e.PS:
                paddr = nxt
                continue
            if not v & e.P and mask & (1 << PG_LEVEL_2M):
                if not paddr & (SZ_2M - 1) and nxt - paddr == SZ_2M and (end - paddr) >= SZ_2M:
                    # a whole run of 2 MiB pages in this table
                    n = min((end - paddr) >> 21, 512 - idx)
                    vals = (np.uint64(paddr) + (_ARANGE[:n] << np.uint64(21))) | np.uint64(
                        large_prot(PAGE_KERNEL)
                    )
                    frame[idx : idx + n] = vals
                    pages += n
                    paddr += n * SZ_2M
                    continue
                frame[idx] = (paddr & ~(SZ_2M - 1)) | large_prot(PAGE_KERNEL)
                pages += 1
                paddr = (paddr | (SZ_2M - 1)) + 1
                continue
            pte = self._child(frame, idx, 2, alloc)
            self._phys_pte_init(pte, paddr, nxt)
            paddr = nxt
        self.update_page_count(PG_LEVEL_2M, pages)

    def _phys_pte_init(self, pte_pa: int, paddr: int, end: int) -> None:
        frame = self.k.mem.frame(pte_pa >> 12)
        i0 = ((PAGE_OFFSET + paddr) >> 12) & 0x1FF
        n = (end - paddr) >> 12
        existing = frame[i0 : i0 + n] != 0
        vals = (np.uint64(paddr) + (_ARANGE[:n] << np.uint64(12))) | np.uint64(PAGE_KERNEL)
        frame[i0 : i0 + n] = np.where(existing, frame[i0 : i0 + n], vals)
        self.update_page_count(PG_LEVEL_4K, int(n - np.count_nonzero(existing)))

    # -- vmemmap -------------------------------------------------------------------------
    def vmemmap_populate(self, early_alloc: EarlyAlloc) -> None:
        """``vmemmap_populate`` -> ``vmemmap_populate_hugepages``: ``struct page`` for all
        RAM in 2 MiB pages (``PAGE_KERNEL_LARGE``) backed by one memblock buffer, tables
        from the early allocator."""
        regions = self.k.memblock.memory_regions()
        lo = min(b for b, _s in regions) >> 12
        hi = max(b + s for b, s in regions) >> 12
        start = (VMEMMAP_START + lo * STRUCT_PAGE_SIZE) & ~(SZ_2M - 1)
        end = _round_up(VMEMMAP_START + hi * STRUCT_PAGE_SIZE, SZ_2M)
        buf = self.k.memblock.memblock_phys_alloc(end - start, SZ_2M)
        if not buf:
            raise MemoryError("vmemmap: no memory for struct pages")
        pgd = self.k.mem.frame(self.swapper_pg_dir >> 12)
        va, pa = start, buf
        while va < end:
            pud = self._child(pgd, (va >> 39) & 0x1FF, 0, early_alloc)
            pmd = self._child(self.k.mem.frame(pud >> 12), (va >> 30) & 0x1FF, 1, early_alloc)
            i0 = (va >> 21) & 0x1FF
            n = min((end - va) >> 21, 512 - i0)
            vals = (np.uint64(pa) + (_ARANGE[:n] << np.uint64(21))) | np.uint64(
                large_prot(PAGE_KERNEL)
            )
            self.k.mem.frame(pmd >> 12)[i0 : i0 + n] = vals
            va += n * SZ_2M
            pa += n * SZ_2M
        self.vmemmap_range = (start, end, buf)

    # -- after boot ------------------------------------------------------------------------
    def mark_rodata_ro(self) -> None:
        """``mark_rodata_ro``: text ROX, rodata RO, data NX in the image mapping, each
        change reaching the direct-map alias through ``cpa_process_alias`` (text and
        rodata read-only there too). 2 MiB-aligned: no split."""
        self.rodata_ro = True
        base = START_KERNEL_MAP + self.kimage_pa
        self.change_page_attr_set_clr(base, TEXT_SIZE >> 12, 0, e.RW)
        self.change_page_attr_set_clr(base + RODATA_OFFSET, RODATA_SIZE >> 12, e.NX, e.RW)
        self.change_page_attr_set_clr(
            base + DATA_OFFSET, (self.kimage_size - DATA_OFFSET) >> 12, e.NX, 0, alias=False
        )
        self.k.counters["mark_rodata_ro"] += 1
