"""arm64 kernel page-table creation and linear-map splitting.

Models ``arch/arm64/mm/mmu.c``: ``__create_pgd_mapping`` with one function per table
level (``alloc_init_pud``, ``alloc_init_cont_pmd``/``init_pmd``,
``alloc_init_cont_pte``/``init_pte``) and the page-table allocator passed in; the
``NO_BLOCK_MAPPINGS``/``NO_CONT_MAPPINGS`` flags; the policy predicate
``force_pte_mapping()`` kept apart from the mechanism ``split_kernel_leaf_mapping()``
(PUD -> contPMD/PMD -> contPTE/PTE, only at the leaves that straddle the edges).

Creation happens at boot and writes tables directly in physical memory: Linux writes
early tables through the fixmap, which no pkey protects, so an MMU check would
always pass (docs/fidelity.md). Level-3 tables are filled 512 entries at a time with
numpy. Splits after boot go through the guarded write helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.pgtable import PgtableMixin, sect_prot
from kpsim.hw.arm64 import descriptors as d
from kpsim.mm.fault_inject import FaultAttr
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL, Gfp

NO_BLOCK_MAPPINGS = 1 << 0
NO_CONT_MAPPINGS = 1 << 1

CONT_PTE_SIZE = 1 << 16
CONT_PMD_SIZE = 1 << 25
SPLIT_COUNTER = {1: "split_pud", 2: "split_pmd"}
MAX_SPLIT_ATTEMPTS = 64  # the model bounds the retry loop of the v6 split protocol

# An early table allocator returns the physical address of a zeroed page for ``level``.
EarlyAlloc = Callable[[int], int]

NDArr = npt.NDArray[np.uint64]
_ARANGE = np.arange(512, dtype=np.uint64)


@mypyc_attr(native_class=False)  # see Arm64Base
class MmuMixin(PgtableMixin):
    # -- policy -----------------------------------------------------------------------
    def force_pte_mapping(self) -> bool:
        """The linear map must be PTE-mapped (rodata=full without BBML2, debug_pagealloc)."""
        return self.linear_map_policy == "pte"

    def linear_map_flags(self) -> int:
        return NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS if self.force_pte_mapping() else 0

    # -- creation (boot) ------------------------------------------------------------------
    def create_pgd_mapping(
        self, pgd_pa: int, phys: int, virt: int, size: int, prot: int, alloc: EarlyAlloc, flags: int
    ) -> None:
        """``__create_pgd_mapping``: map [virt, virt+size) to ``phys`` with ``prot``."""
        self._map_level(pgd_pa, 0, virt, virt + size, phys, prot, alloc, flags)

    def _child_table(self, frame: NDArr, idx: int, level: int, alloc: EarlyAlloc) -> int:
        desc = int(frame[idx])
        if desc == 0:
            child = alloc(level + 1)
            frame[idx] = d.table_desc(child, uxn_table=level == 0 and False)
            return child
        if d.kind(desc, level) is not d.Kind.TABLE:
            raise AssertionError(f"level {level} entry {desc:#x} is not a table (remap)")
        return desc & d.OA_MASK

    def _map_level(
        self,
        table_pa: int,
        level: int,
        va: int,
        end: int,
        pa: int,
        prot: int,
        alloc: EarlyAlloc,
        flags: int,
    ) -> None:
        frame = self.k.mem.frame(table_pa >> 12)
        if level == 3:
            self._fill_ptes(frame, va, end, pa, prot, flags)
            return
        shift = d.LEVEL_SHIFT[level]
        size = 1 << shift
        while va < end:
            nxt = min((va | (size - 1)) + 1, end)
            idx = (va >> shift) & 0x1FF
            if (
                level in (1, 2)
                and not flags & NO_BLOCK_MAPPINGS
                and not (va | nxt | pa) & (size - 1)
            ):
                n = min((end - va) >> shift, 512 - idx)
                self._fill_blocks(frame, level, idx, n, va, pa, prot, flags)
                va += n * size
                pa += n * size
                continue
            child = self._child_table(frame, idx, level, alloc)
            self._map_level(child, level + 1, va, nxt, pa, prot, alloc, flags)
            pa += nxt - va
            va = nxt

    def _fill_blocks(
        self,
        frame: NDArr,
        level: int,
        idx: int,
        n: int,
        va: int,
        pa: int,
        prot: int,
        flags: int,
    ) -> None:
        shift = d.LEVEL_SHIFT[level]
        vals = (np.uint64(pa) + (_ARANGE[:n] << np.uint64(shift))) | np.uint64(sect_prot(prot))
        if level == 2 and not flags & NO_CONT_MAPPINGS:
            vals = _set_cont(vals, va, pa, shift, CONT_PMD_SIZE)
        frame[idx : idx + n] = vals

    def _fill_ptes(self, frame: NDArr, va: int, end: int, pa: int, prot: int, flags: int) -> None:
        i0 = (va >> 12) & 0x1FF
        n = (end - va) >> 12
        vals = (np.uint64(pa) + (_ARANGE[:n] << np.uint64(12))) | np.uint64(prot | d.TYPE | d.VALID)
        if not flags & NO_CONT_MAPPINGS:
            vals = _set_cont(vals, va, pa, 12, CONT_PTE_SIZE)
        frame[i0 : i0 + n] = vals

    # -- splitting (run time) -------------------------------------------------------------
    #: Test hooks (None in normal runs): ``split_observer(level, child_pfn)`` runs
    #: right after a split installs its new table; ``split_race_hook()`` runs between
    #: ``kpkeys_prepare_direct_map_split()`` and taking the lock (another context).
    split_observer: Callable[[int, int], None] | None = None
    split_race_hook: Callable[[], None] | None = None
    #: ``fail_split`` (:mod:`kpsim.mm.fault_inject`); None: injection off
    fail_split: FaultAttr | None = None

    def split_kernel_leaf_mapping(self, start: int, end: int) -> int:
        """Split only the leaves that straddle ``start`` or ``end``; 0 or -ENOMEM.

        With the v6 block allocator, callers follow its protocol (v6 15/30): call
        ``kpkeys_prepare_direct_map_split()`` without locks, take
        ``pgtable_split_lock``, then ``kpkeys_ready_for_direct_map_split()``; when
        not ready, drop the lock and go round again (bounded in the model).
        """
        if self.force_pte_mapping():
            return 0
        hooks = self.kpkeys_split_hooks if self.hardened_pgtables else None
        ready_check = "reserve-ready-check" not in self.disabled
        for _attempt in range(MAX_SPLIT_ATTEMPTS):
            if hooks is not None:
                ret: int = hooks.kpkeys_prepare_direct_map_split()
                if ret:
                    return ret
                if self.split_race_hook is not None:
                    self.split_race_hook()
                if self.explore_hook is not None:
                    self.explore_hook("split:prepared")
            self.split_lock_depth += 1  # mutex pgtable_split_lock
            try:
                ready = (
                    hooks is None or not ready_check or hooks.kpkeys_ready_for_direct_map_split()
                )
                if not ready:
                    self.k.counters["split_not_ready"] += 1
                else:
                    if self.explore_hook is not None:
                        self.explore_hook("split:locked")
                    self.arch_enter_lazy_mmu_mode()
                    try:
                        for edge in (start, end):
                            ret = self.split_kernel_leaf_mapping_locked(edge)
                            if ret:
                                return ret
                    finally:
                        self.arch_leave_lazy_mmu_mode()
            finally:
                self.split_lock_depth -= 1
            if ready:  # not ready: drop the lock and go round again
                return 0
        self.k.warn("split_kernel_leaf_mapping", "never ready for a direct map split")
        return -12

    def split_kernel_leaf_mapping_locked(self, addr: int) -> int:
        """Walk to the leaf covering ``addr`` and split it until ``addr`` is a boundary."""
        ptr = self.pgd_offset_k(addr)
        if not self.read_entry(ptr):
            return 0
        for level in (1, 2, 3):
            ptr = self.next_offset(ptr, addr, level)
            v = self.read_entry(ptr)
            if v == 0:
                return 0
            size = d.level_size(level)
            if v & d.CONT and level in (2, 3) and addr & (size * 16 - 1):
                self._split_cont(ptr, level)
                v = self.read_entry(ptr)
            if d.kind(v, level) is d.Kind.TABLE:
                continue
            if level == 3 or not addr & (size - 1):
                return 0
            ret = self._split_block(ptr, v, level)
            if ret:
                return ret
        return 0

    def _split_cont(self, ptr: int, level: int) -> None:
        """``split_contpte``/``split_contpmd``: clear PTE_CONT on the 16-entry group."""
        base_pa = self.entry_pa(ptr) & ~(16 * 8 - 1)
        table_pa = base_pa & ~0xFFF
        i0 = (base_pa & 0xFFF) >> 3
        vals = self.read_table(table_pa)[i0 : i0 + 16] & np.uint64(~d.CONT & ((1 << 64) - 1))
        self.pt_store_batch(table_pa, slice(i0, i0 + 16), vals)
        self.k.counters["split_cont"] += 1

    def _split_block(self, ptr: int, block: int, level: int) -> int:
        """``split_pud``/``split_pmd``: replace a block by a table of smaller leaves."""
        if self.fail_split is not None and self.fail_split.should_fail(1, f" (level {level})"):
            self.k.counters["split_injected"] += 1
            return -12  # the split's table allocation failed
        pfn = self.k.pgtable.alloc_table(
            GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT, level + 1, "kernel"
        )
        if pfn is None:
            return -12  # -ENOMEM
        child_pa = pfn << 12
        shift = d.LEVEL_SHIFT[level + 1]
        attrs = block & ~d.BLOCK_OA_MASK[level] & ~d.CONT
        oa = block & d.BLOCK_OA_MASK[level]
        if level + 1 == 3:
            attrs |= d.TYPE
        vals = (np.uint64(oa) + (_ARANGE << np.uint64(shift))) | np.uint64(attrs)
        vals |= np.uint64(d.CONT)  # the whole span is uniform: every group is contiguous
        self.pt_store_batch(child_pa, slice(0, 512), vals)
        self.pt_store(ptr, d.table_desc(child_pa))
        self.k.counters[SPLIT_COUNTER[level]] += 1
        if self.split_observer is not None:
            self.split_observer(level, pfn)
        return 0


def _set_cont(vals: NDArr, va: int, pa: int, shift: int, cont_size: int) -> NDArr:
    """Set the contiguous bit on every naturally aligned group of 16 fully present."""
    if (va ^ pa) & (cont_size - 1):
        return vals
    n = len(vals)
    step = 1 << shift
    first = (-(va // step)) % 16  # entries until the first aligned group
    groups = (n - first) // 16
    if groups <= 0:
        return vals
    vals = vals.copy()
    vals[first : first + groups * 16] |= np.uint64(d.CONT)
    return vals
