"""x86 change_page_attr (``arch/x86/mm/pat/set_memory.c``): one engine, thin verbs.

``change_page_attr_set_clr(addr, numpages, mask_set, mask_clr)`` walks the range a
mapping at a time (``__change_page_attr_set_clr`` -> ``__change_page_attr``):

- ``lookup_address_in_pgd`` finds the leaf and its level;
- a 4 KiB PTE is rewritten if the masks change it (kpsim does a whole run of PTEs of
  one table at once with numpy: the same stores, one per changed entry);
- a large leaf (2 MiB PMD, 1 GiB PUD) goes through ``__should_split_large_page``: no
  change needed -> keep it and skip the pages it covers; the request covers the whole
  large page from its first byte -> rewrite it in place; otherwise ``split_large_page``
  (``__split_large_page``: a new table of 512 entries with the same attributes, 1 GiB
  -> 2 MiB leaves or 2 MiB -> 4 KiB PTEs, installed with ``_KERNPG_TABLE``, then
  ``flush_tlb_all()``) and the same address is tried again;
- ``cpa_process_alias``: a change to a direct-map page of the kernel image is made to
  its kernel-text-mapping alias too (NX left out of the masks: the high mapping keeps
  its executable text), and a change to the image mapping to its direct-map alias;
- at the end ``cpa_flush``: if anything changed, INVLPG of each page on every CPU, or
  ``flush_tlb_all()`` above ``tlb_single_page_flush_ceiling`` pages.

Counters: ``direct_pages_count[]`` (what ``/proc/meminfo`` shows as DirectMap4k/2M/1G,
``arch_report_meminfo``) kept by boot's ``kernel_physical_mapping_init`` and
``split_page_count``, which also counts the vmstat events ``direct_map_level2_splits``
(a 2 MiB page split) and ``direct_map_level3_splits`` (1 GiB) once the system is running
and only for the direct map. kpsim counts every split as ``split_pud``/``split_pmd`` too
(arm64's names: the same events, image alias included).

The split's table page comes from ``pagetable_alloc`` with ``__GFP_PGTABLE_SPLIT`` (the
kpkeys series' route on arm64, and Rick Edgecombe's PKS series' reserve on x86), not
from ``alloc_pages`` as in mainline: the kpkeys allocator decides where it comes from.
Left out: ``static_protections`` (no verb here asks to make rodata writable or text
NX), CPA_COLLAPSE (pages are never merged back), cache-attribute changes and clflush,
``set_memory_4k``'s ``force_split``, the array/pages forms (``CPA_ARRAY``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.memory import PAGE_END, PAGE_OFFSET, START_KERNEL_MAP
from kpsim.arch.x86.pgtable import (
    KERNPG_TABLE,
    LEVEL_SHIFT,
    PgtableMixin,
    level_size,
    pfn_mask,
    small_prot,
)
from kpsim.arch.x86.tlbflush import TLB_SINGLE_PAGE_FLUSH_CEILING, TlbFlushMixin
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.pkeys import NR_PKEYS
from kpsim.mm.fault_inject import FaultAttr
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL, Gfp

EINVAL = -22
EFAULT = -14
ENOMEM = -12
U64 = (1 << 64) - 1
PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G = 1, 2, 3  # enum pg_level
#: PG_LEVEL_* of a leaf at each Linux table level (1 PUD, 2 PMD, 3 PTE)
PG_LEVEL_OF = {1: PG_LEVEL_1G, 2: PG_LEVEL_2M, 3: PG_LEVEL_4K}
SPLIT_COUNTER = {1: "split_pud", 2: "split_pmd"}
VMSTAT_SPLIT = {PG_LEVEL_2M: "direct_map_level2_splits", PG_LEVEL_1G: "direct_map_level3_splits"}
_ARANGE = np.arange(512, dtype=np.uint64)
MAX_SPLIT_ATTEMPTS = 64  # the model bounds the retry loop of the v6 split protocol


@mypyc_attr(native_class=False)  # see ArchBase
class SetMemoryMixin(PgtableMixin, TlbFlushMixin, X86Base):
    #: ``direct_pages_count[PG_LEVEL_4K..PG_LEVEL_1G]`` (index 0 unused)
    direct_pages_count: list[int]
    kimage_pa: int
    kimage_size: int
    fail_set_memory_pkey: FaultAttr | None = None
    fail_split: FaultAttr | None = None

    # -- counters ------------------------------------------------------------------------
    def update_page_count(self, level: int, pages: int) -> None:
        """``update_page_count``: mapped direct-map pages of a size."""
        self.direct_pages_count[level] += pages

    def split_page_count(self, level: int) -> None:
        """``split_page_count``: one large page of ``level`` became 512 smaller ones."""
        if self.direct_pages_count[level] == 0:
            return
        self.direct_pages_count[level] -= 1
        if self.system_running:
            self.k.counters[VMSTAT_SPLIT[level]] += 1
        self.direct_pages_count[level - 1] += 512

    def arch_report_meminfo(self) -> dict[str, int]:
        """``arch_report_meminfo``: DirectMap4k/2M/1G in kB, as ``/proc/meminfo``."""
        c = self.direct_pages_count
        return {
            "DirectMap4k": c[PG_LEVEL_4K] << 2,
            "DirectMap2M": c[PG_LEVEL_2M] << 11,
            "DirectMap1G": c[PG_LEVEL_1G] << 20,
        }

    # -- lookup ----------------------------------------------------------------------------
    def lookup_address(self, addr: int) -> tuple[int, int] | None:
        """``lookup_address_in_pgd``: (entry pointer, Linux level 1-3) of the leaf for
        ``addr``, or None where a level is empty."""
        ptr = self.pgd_offset_k(addr)
        v = self.read_entry(ptr)
        for level in (1, 2, 3):
            if not v & e.P:
                return None
            ptr = self.next_offset(ptr, addr, level)
            v = self.read_entry(ptr)
            if self.pxd_leaf(v, level) or level == 3:
                return (ptr, level) if v else None
        return None

    # -- the engine ------------------------------------------------------------------------
    def change_page_attr_set_clr(
        self,
        addr: int,
        numpages: int,
        mask_set: int,
        mask_clr: int,
        *,
        alias: bool = True,
        flush: bool = True,
    ) -> int:
        """Set and clear ``mask_set``/``mask_clr`` on ``numpages`` pages from ``addr``
        (4 KiB-PTE form of the bits); 0 or a negative errno. With the v6 block
        allocator on, its split protocol runs first (``kpkeys_prepare_direct_map_split``
        without the lock, ``kpkeys_ready_for_direct_map_split`` under ``cpa_lock``,
        retried when not ready), as arm64's ``split_kernel_leaf_mapping`` does, with
        ``kpsim explore``'s points ``split:prepared`` and ``split:locked``. ``flush``
        False leaves out the final ``cpa_flush`` (``kpsim explore``'s
        ``tlbi-after-set-memory-pkey`` step; a split's own flush stays)."""
        start = addr & ~0xFFF
        if numpages <= 0:
            return 0
        hooks = self.kpkeys_split_hooks if self.hardened_pgtables else None
        # cpa_lock serialises CPA only where the direct map has large pages (Linux skips
        # it with debug_pagealloc, whose direct map is 4K-only, as linear_map="pte" is)
        lock = int(self.linear_map_policy != "pte")
        for _attempt in range(MAX_SPLIT_ATTEMPTS):
            if hooks is not None:  # the v6 split protocol, before the lock
                ret: int = hooks.kpkeys_prepare_direct_map_split()
                if ret:
                    return ret
                if self.explore_hook is not None:
                    self.explore_hook("split:prepared")
            self.split_lock_depth += lock  # cpa_lock
            ready = True
            try:
                if hooks is not None and not self._ready_for_split(hooks):
                    self.k.counters["split_not_ready"] += 1
                    ready = False
                else:
                    if hooks is not None and self.explore_hook is not None:
                        self.explore_hook("split:locked")
                    changed = self._cpa_range(start, numpages, mask_set, mask_clr, alias)
            finally:
                self.split_lock_depth -= lock
            if not ready:
                continue
            if changed < 0:
                return changed
            if changed and flush:
                self.cpa_flush(start, numpages)
            return 0
        self.k.warn("change_page_attr_set_clr", "never ready for a direct map split")
        return ENOMEM

    def _ready_for_split(self, hooks: Any) -> bool:
        """``kpkeys_ready_for_direct_map_split()`` (always ready with ``kpsim explore
        --disable reserve-ready-check``)."""
        if "reserve-ready-check" in self.disabled:
            return True
        ready: bool = hooks.kpkeys_ready_for_direct_map_split()
        return ready

    def _cpa_range(
        self, start: int, numpages: int, mask_set: int, mask_clr: int, alias: bool
    ) -> int:
        """``__change_page_attr_set_clr``: 1 if any entry changed, 0 if none, or -errno."""
        changed = 0
        a, left = start, numpages
        while left > 0:
            done = self._change_page_attr(a, left, mask_set, mask_clr)
            if done < 0:
                return done
            n, did = done >> 1, done & 1
            changed |= did
            if alias:
                ret = self.cpa_process_alias(a, n, mask_set, mask_clr)
                if ret < 0:
                    return ret
                changed |= ret
            a += n << 12
            left -= n
        return changed

    def _change_page_attr(self, addr: int, left: int, mask_set: int, mask_clr: int) -> int:
        """``__change_page_attr`` at ``addr``: ``(pages handled << 1) | changed``, or -errno."""
        for _ in range(3):  # at most two splits (1G -> 2M -> 4K) before a 4K PTE
            found = self.lookup_address(addr)
            if found is None:
                return EFAULT if PAGE_OFFSET <= addr < PAGE_END else EINVAL
            ptr, level = found
            if level == 3:
                return self._change_ptes(ptr, addr, left, mask_set, mask_clr)
            res = self._should_split_large_page(ptr, level, addr, left, mask_set, mask_clr)
            if res >= 0:
                return res
            ret = self.split_large_page(ptr, level, addr)
            if ret:
                return ret
        raise AssertionError("change_page_attr: still a large page after two splits")

    def _change_ptes(self, ptr: int, addr: int, left: int, mask_set: int, mask_clr: int) -> int:
        """The 4K case over the run of PTEs of one table from ``ptr``."""
        table_pa = self.entry_pa(ptr) & ~0xFFF
        i0 = (ptr & 0xFFF) >> 3
        i1 = min(512, i0 + left)
        old = self.read_table(table_pa)[i0:i1]
        new = np.where(old != 0, (old & np.uint64(~mask_clr & U64)) | np.uint64(mask_set), old)
        idx = np.flatnonzero(new != old)
        if idx.size:
            if idx.size == 1:
                self.pt_store(ptr + (int(idx[0]) << 3), int(new[idx[0]]))
            else:
                self.pt_store_batch(table_pa, idx + i0, new[idx])
        return ((i1 - i0) << 1) | int(idx.size > 0)

    def _should_split_large_page(
        self, ptr: int, level: int, addr: int, left: int, mask_set: int, mask_clr: int
    ) -> int:
        """``__should_split_large_page``: ``(pages << 1) | changed`` if handled in place,
        -1 to split."""
        psize = level_size(level)
        old = self.read_entry(ptr)
        lpaddr = addr & ~(psize - 1)
        in_page = (lpaddr + psize - addr) >> 12
        n = min(in_page, left)
        attrs = old & ~pfn_mask(level)
        req = (small_prot(attrs) & ~mask_clr) | mask_set
        new_attrs = (req & ~e.PAT_4K) | e.PS | (e.PAT_LARGE if req & e.PAT_4K else 0)
        if new_attrs == attrs:
            return n << 1  # "If there are no changes, return."
        if addr != lpaddr or n != psize >> 12:
            return -1
        self.pt_store(ptr, (old & pfn_mask(level)) | new_attrs)
        return (n << 1) | 1

    def split_large_page(self, ptr: int, level: int, addr: int) -> int:
        """``split_large_page`` + ``__split_large_page``: 0 or -ENOMEM. Linux drops
        ``cpa_lock`` around the table's allocation; kpsim keeps it held there
        (``split_lock_depth``), as the kpkeys allocators' sign that keying the new table
        may need a split of its own (docs/fidelity.md)."""
        if self.fail_split is not None and self.fail_split.should_fail(1, f" (level {level})"):
            self.k.counters["split_injected"] += 1
            return ENOMEM
        pfn = self.k.pgtable.alloc_table(
            GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT, level + 1, "kernel"
        )
        if pfn is None:
            return ENOMEM
        old = self.read_entry(ptr)
        base = old & pfn_mask(level)
        attrs = old & ~pfn_mask(level)
        if level + 1 == 3:
            attrs = small_prot(attrs)
        shift = np.uint64(LEVEL_SHIFT[level + 1])
        vals = (np.uint64(base) + (_ARANGE << shift)) | np.uint64(attrs)
        self.pt_store_batch(pfn << 12, slice(0, 512), vals)
        self.pt_store(ptr, (pfn << 12) | KERNPG_TABLE)
        if PAGE_OFFSET <= addr < PAGE_END:
            self.split_page_count(PG_LEVEL_OF[level])
        self.k.counters[SPLIT_COUNTER[level]] += 1
        self.flush_tlb_all()  # "Do a global flush tlb after splitting the large page"
        return 0

    def cpa_process_alias(self, addr: int, n: int, mask_set: int, mask_clr: int) -> int:
        """``cpa_process_alias``: the other alias of kernel-image pages."""
        lo, hi = self.kimage_pa, self.kimage_pa + self.kimage_size
        if PAGE_OFFSET <= addr < PAGE_END:
            pa = addr - PAGE_OFFSET
            a0, a1 = max(pa, lo), min(pa + (n << 12), hi)
            if a0 >= a1:
                return 0
            return self._cpa_range(
                START_KERNEL_MAP + a0, (a1 - a0) >> 12, mask_set & ~e.NX, mask_clr & ~e.NX, False
            )
        if addr >= START_KERNEL_MAP:
            pa = addr - START_KERNEL_MAP
            return self._cpa_range(PAGE_OFFSET + pa, n, mask_set, mask_clr, False)
        return 0

    def cpa_flush(self, start: int, numpages: int) -> None:
        """``cpa_flush``: INVLPG each page everywhere, or flush all above the ceiling."""
        if numpages > TLB_SINGLE_PAGE_FLUSH_CEILING:
            self.flush_tlb_all()
        else:
            self.flush_tlb_kernel_range(start, start + (numpages << 12))

    # -- thin verbs --------------------------------------------------------------------
    def set_memory_ro(self, addr: int, numpages: int) -> int:
        return self.change_page_attr_set_clr(addr, numpages, 0, e.RW)

    def set_memory_rw(self, addr: int, numpages: int) -> int:
        return self.change_page_attr_set_clr(addr, numpages, e.RW, 0)

    def set_memory_nx(self, addr: int, numpages: int) -> int:
        return self.change_page_attr_set_clr(addr, numpages, e.NX, 0)

    def set_memory_x(self, addr: int, numpages: int) -> int:
        return self.change_page_attr_set_clr(addr, numpages, 0, e.NX)

    def set_memory_valid(self, addr: int, numpages: int, enable: bool) -> int:
        if enable:
            return self.change_page_attr_set_clr(addr, numpages, e.P, 0)
        return self.change_page_attr_set_clr(addr, numpages, 0, e.P)

    def set_direct_map_invalid_noflush(self, pfn: int) -> int:
        return self.change_page_attr_set_clr(PAGE_OFFSET + (pfn << 12), 1, 0, e.P | e.RW)

    def set_direct_map_default_noflush(self, pfn: int) -> int:
        return self.change_page_attr_set_clr(PAGE_OFFSET + (pfn << 12), 1, e.P | e.RW, 0)

    def set_memory_pkey(self, addr: int, numpages: int, pkey: int) -> int:
        """Set the protection key (bits 62:59) of ``numpages`` direct-map pages
        (``set_memory_pks`` in Rick Edgecombe's series): 0 without PKS; -EINVAL outside
        the direct map or for a key >= 16."""
        if not self.system_supports_poe():
            return 0
        if not PAGE_OFFSET <= addr < PAGE_END or not 0 <= pkey < NR_PKEYS:
            return EINVAL
        fail = self.fail_set_memory_pkey
        if fail is not None and (pkey or fail.spec.option("unkey")) and fail.should_fail(numpages):
            self.k.counters["set_memory_pkey_injected"] += 1
            return ENOMEM
        self.k.counters["set_memory_pkey"] += 1
        self.k.counters["set_memory_pkey_page"] += numpages
        value, mask = pkey << e.PKEY_SHIFT, e.PKEY_MASK
        if self.explore_hook is None and not self.disabled:
            return self.change_page_attr_set_clr(addr, numpages, value, mask)
        change = self.change_page_attr_set_clr
        return self.explored_pkey_change(change, addr, numpages, value, mask)
