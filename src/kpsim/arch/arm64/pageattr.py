"""arm64 linear-map attribute changes (``arch/arm64/mm/pageattr.c``).

One engine, ``__change_memory_common(start, size, set_mask, clear_mask)``: split the
leaves straddling the edges (``split_kernel_leaf_mapping``), rewrite every leaf in the
range inside a lazy-MMU section (a block lying wholly inside is rewritten in place as
one entry), then ``flush_tlb_kernel_range`` unless the change only makes invalid
entries valid. Thin verbs over it: ``set_memory_ro/rw/valid``,
``set_direct_map_invalid_noflush``, ``set_direct_map_default_noflush`` and
``set_memory_pkey`` (v5 06/18: 0 without POE; -EINVAL outside the linear map or for a
pkey >= ``arch_max_pkey()``).

Every verb reaches ``split_kernel_leaf_mapping`` (arch/arm64/mmu.py), which follows
the v6 block allocator's split protocol (``kpkeys_prepare_direct_map_split`` before
the split lock, ``kpkeys_ready_for_direct_map_split`` under it, retry when not ready)
whenever that allocator is on, so a foreign split always finds its reserve (group 2).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.lazy_mmu import LazyMmuMixin
from kpsim.arch.arm64.memory import PAGE_OFFSET
from kpsim.arch.arm64.mmu import MmuMixin
from kpsim.arch.arm64.tlbflush import TlbFlushMixin
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.por import ARCH_MAX_PKEY
from kpsim.mm.fault_inject import FaultAttr

EINVAL = -22
ENOMEM = -12
U64 = (1 << 64) - 1
_TABLE_BITS = d.VALID | d.TYPE
_VPN_SHIFTS: Final = (18, 9, 0)  # d.LEVEL_SHIFT[1..3] - 12


@mypyc_attr(native_class=False)  # see Arm64Base
class PageattrMixin(MmuMixin, TlbFlushMixin, LazyMmuMixin):
    #: ``fail_set_memory_pkey`` (:mod:`kpsim.mm.fault_inject`); None: injection off
    fail_set_memory_pkey: FaultAttr | None = None

    def change_memory_common(
        self, addr: int, numpages: int, set_mask: int, clear_mask: int, *, flush: bool = True
    ) -> int:
        start = addr & ~0xFFF
        size = numpages << 12
        if not numpages:
            return 0
        if not self._kernel_range_mapped(start, start + size):
            return EINVAL
        if numpages == 1 and self.force_pte_mapping():
            pte_pa = self._pte_pa_k(start)
            if pte_pa is not None:
                self._change_one_pte(pte_pa, start, set_mask, clear_mask, flush)
                return 0
        ret = self.split_kernel_leaf_mapping(start, start + size)
        if ret:
            return ret
        self.arch_enter_lazy_mmu_mode()
        try:
            self._update_range(start, start + size, set_mask, clear_mask)
        finally:
            self.arch_leave_lazy_mmu_mode()
        only_validating = set_mask == d.VALID and not clear_mask
        if flush and not only_validating:
            self.flush_tlb_kernel_range(start, start + size)
        return 0

    def _pte_pa_k(self, addr: int) -> int | None:
        """The physical address of the kernel PTE for ``addr`` when every level above
        is a table descriptor (a PTE-mapped address), else None (reads by physical
        address, as :meth:`read_entry` does)."""
        mem = self.k.mem  # (mem.read64 called on the object: a direct call when compiled)
        vpn = addr >> 12  # the indexes from the page number (word-sized; a kernel VA is not)
        pa = self.swapper_pg_dir + (((vpn >> 27) & 0x1FF) << 3)
        for shift in _VPN_SHIFTS:  # the index of levels 1, 2, 3 in the page number
            v = mem.read64(pa)
            if v & _TABLE_BITS != _TABLE_BITS:  # d.kind(v, level - 1) is not TABLE
                return None
            pa = (v & d.OA_MASK) + (((vpn >> shift) & 0x1FF) << 3)
        return pa

    def _change_one_pte(
        self, pte_pa: int, start: int, set_mask: int, clear_mask: int, flush: bool
    ) -> None:
        """:meth:`change_memory_common` for one page of a PTE-mapped linear map
        (``force_pte_mapping``: ``split_kernel_leaf_mapping`` returns at once): the
        same lazy-MMU section around the same single guarded, MMU-checked store of
        the PTE (rewritten as ``_update_range`` would, an empty one stored back as
        it is), then ``flush_tlb_kernel_range`` of the page; only the walk is
        scalar. Same state and counters as the general path."""
        self.arch_enter_lazy_mmu_mode()
        try:
            v = self.k.mem.read64(pte_pa)
            new = (v & ~clear_mask & U64) | set_mask if v else 0
            self.pt_store_batch(pte_pa & ~0xFFF, (pte_pa & 0xFFF) >> 3, np.uint64(new))
        finally:
            self.arch_leave_lazy_mmu_mode()
        if flush and not (set_mask == d.VALID and not clear_mask):
            self.flush_tlb_kernel_range(start, start + 0x1000)

    @staticmethod
    def _kernel_range_mapped(start: int, end: int) -> bool:
        return start >= PAGE_OFFSET and end <= 1 << 64

    def _update_range(self, start: int, end: int, set_mask: int, clear_mask: int) -> None:
        """``walk_kernel_page_table_range`` with the pageattr callbacks."""
        keep = np.uint64(~clear_mask & U64)
        setm = np.uint64(set_mask)
        a = start
        while a < end:
            ptr = self.pgd_offset_k(a)
            level = 0
            v = self.read_entry(ptr)
            while level < 3 and d.kind(v, level) is d.Kind.TABLE:
                level += 1
                ptr = self.next_offset(ptr, a, level)
                v = self.read_entry(ptr)
            size = d.level_size(level)
            if level < 3:
                if v:
                    self.pt_store(ptr, (v & ~clear_mask) | set_mask)
                a = (a | (size - 1)) + 1
                continue
            table_pa = self.entry_pa(ptr) & ~0xFFF
            i0 = (a >> 12) & 0x1FF
            i1 = min(512, i0 + ((end - a) >> 12))
            old = self.read_table(table_pa)[i0:i1]
            vals = np.where(old != 0, (old & keep) | setm, old)
            self.pt_store_batch(table_pa, slice(i0, i1), vals)
            a += (i1 - i0) << 12

    # -- thin verbs --------------------------------------------------------------------
    def set_memory_ro(self, addr: int, numpages: int) -> int:
        return self.change_memory_common(addr, numpages, d.AP_RDONLY, d.DBM)

    def set_memory_rw(self, addr: int, numpages: int) -> int:
        return self.change_memory_common(addr, numpages, d.DBM, d.AP_RDONLY)

    def set_memory_valid(self, addr: int, numpages: int, enable: bool) -> int:
        if enable:
            return self.change_memory_common(addr, numpages, d.VALID, 0)
        return self.change_memory_common(addr, numpages, 0, d.VALID)

    def set_direct_map_invalid_noflush(self, pfn: int) -> int:
        return self.change_memory_common(self.layout.pfn_to_virt(pfn), 1, 0, d.VALID, flush=False)

    def set_direct_map_default_noflush(self, pfn: int) -> int:
        return self.change_memory_common(
            self.layout.pfn_to_virt(pfn), 1, d.VALID | d.DBM, d.AP_RDONLY, flush=False
        )

    def set_memory_pkey(self, addr: int, numpages: int, pkey: int) -> int:
        """Set the POIndex of ``numpages`` linear-map pages to ``pkey``."""
        if not self.system_supports_poe():
            return 0
        if not self.layout.is_linear(addr) or not 0 <= pkey < ARCH_MAX_PKEY:
            return EINVAL
        fail = self.fail_set_memory_pkey
        if fail is not None and (pkey or fail.spec.option("unkey")) and fail.should_fail(numpages):
            self.k.counters["set_memory_pkey_injected"] += 1
            return ENOMEM  # what a failed split inside it returns; nothing changed
        self.k.counters["set_memory_pkey"] += 1
        self.k.counters["set_memory_pkey_page"] += numpages
        value, mask = pkey << d.POINDEX_SHIFT, d.POINDEX_MASK
        if self.explore_hook is None and not self.disabled:
            return self.change_memory_common(addr, numpages, value, mask)
        return self.explored_pkey_change(self.change_memory_common, addr, numpages, value, mask)
