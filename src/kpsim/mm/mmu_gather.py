"""``struct mmu_gather``: batched TLB invalidation for unmapping (``mm/mmu_gather.c``,
``include/asm-generic/tlb.h``; the flush itself is the arch's ``tlb_flush``).

A gather tracks the range of entries actually cleared (``tlb->start``/``end``) and
what was cleared (``cleared_ptes``/``pmds``/``puds``/``p4ds``, ``freed_tables``):

- ``tlb_remove_tlb_entries`` (a present PTE cleared) widens the range, ``cleared_ptes``;
  ``tlb_remove_pmd_tlb_entry`` (a huge PMD) widens it by the PMD, ``cleared_pmds``;
- ``pte_free_tlb``/``pmd_free_tlb``/``pud_free_tlb`` (a table freed) widen it by one
  page at the address the ``free_pgtables`` walk passes, set ``cleared_pmds``/
  ``puds``/``p4ds`` (the level above the freed table) and ``freed_tables``;
- ``tlb_flush_mmu_tlbonly`` flushes nothing when nothing was cleared, otherwise calls
  the arch's ``tlb_flush`` with the range and the stride of ``tlb_get_unmap_size``
  (the smallest level cleared), then resets the range;
- ``tlb_end_vma`` flushes after each VMA (arm64 does not select
  ``MMU_GATHER_MERGE_VMAS``) unless the gather is a full-mm one (``exit_mmap``:
  ``tlb_gather_mmu_fullmm``);
- pages go into the gather's batches (``__tlb_remove_folio_pages_size``: one slot
  per small folio, two per multi-page folio batch; the on-stack bundle of
  ``MMU_GATHER_BUNDLE`` slots, then up to ``MAX_GATHER_BATCH_COUNT`` batch pages of
  ``MAX_GATHER_BATCH`` slots, each left when one slot short of full); when no batch is
  left the zap stops, flushes (``tlb_flush_mmu``) and goes on;
- ``tlb_finish_mmu``: the last flush.

Departures (docs/fidelity.md): pages are freed when their last mapping goes (at zap
time), not after the flush; the batch pages themselves are not allocated from the
page allocator; tables are freed at once (no RCU table freeing, no
``tlb_remove_table`` batch); ``delayed_rmap``, ``need_flush_all`` and
``tlb_change_page_size`` are left out.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from kpsim.mm.mm_types import PAGE_SIZE, PMD_SIZE, SPAN_SHIFT, TASK_SIZE, MmStruct

#: ``MMU_GATHER_BUNDLE``: slots of the on-stack batch
MMU_GATHER_BUNDLE: Final = 8
#: ``MAX_GATHER_BATCH``: slots of one batch page ((PAGE_SIZE - 16) / 8)
MAX_GATHER_BATCH: Final = (PAGE_SIZE - 16) // 8
#: ``MAX_GATHER_BATCH_COUNT``: batch pages one gather may add (10000 / MAX_GATHER_BATCH)
MAX_GATHER_BATCH_COUNT: Final = 10000 // MAX_GATHER_BATCH
PUD_SIZE: Final = 1 << SPAN_SHIFT[2]
P4D_SIZE: Final = 1 << SPAN_SHIFT[1]


class MmuGather:
    """One ``struct mmu_gather`` (see module docstring)."""

    __slots__ = (
        "_batch",
        "_nr",
        "cleared_p4ds",
        "cleared_pmds",
        "cleared_ptes",
        "cleared_puds",
        "end",
        "flushes",
        "freed_tables",
        "fullmm",
        "mm",
        "start",
    )

    def __init__(self, mm: MmStruct, *, fullmm: bool = False) -> None:
        """``tlb_gather_mmu`` (``fullmm``: ``tlb_gather_mmu_fullmm``)."""
        self.mm = mm
        self.fullmm = fullmm
        self.flushes = 0  # tlb_flush calls made (for tests)
        self._batch = 0  # active batch: 0 the bundle, i the i-th batch page
        self._nr = 0
        self._reset_range()

    # -- range tracking (include/asm-generic/tlb.h) ----------------------------------
    def _reset_range(self) -> None:
        """``__tlb_reset_range``."""
        self.start, self.end = TASK_SIZE, 0
        self.freed_tables = False
        self.cleared_ptes = self.cleared_pmds = self.cleared_puds = self.cleared_p4ds = False

    def _adjust_range(self, addr: int, size: int) -> None:
        """``__tlb_adjust_range``."""
        self.start = min(self.start, addr)
        self.end = max(self.end, addr + size)

    def flush_pte_range(self, addr: int, size: int) -> None:
        """``tlb_flush_pte_range`` (``tlb_remove_tlb_entries`` for ``size`` / 4 KiB PTEs)."""
        self._adjust_range(addr, size)
        self.cleared_ptes = True

    def flush_pmd_range(self, addr: int, size: int) -> None:
        """``tlb_flush_pmd_range`` (``tlb_remove_pmd_tlb_entry``: a huge PMD cleared)."""
        self._adjust_range(addr, size)
        self.cleared_pmds = True

    def free_table(self, level: int, addr: int) -> None:
        """``pte_free_tlb`` (level 3), ``pmd_free_tlb`` (2), ``pud_free_tlb`` (1): the
        entry pointing at the table is cleared, so the walk cache must go."""
        self._adjust_range(addr, PAGE_SIZE)
        if level == 3:
            self.cleared_pmds = True
        elif level == 2:
            self.cleared_puds = True
        else:
            self.cleared_p4ds = True
        self.freed_tables = True

    def unmap_size(self) -> int:
        """``tlb_get_unmap_size``: the smallest level cleared."""
        if self.cleared_ptes:
            return PAGE_SIZE
        if self.cleared_pmds:
            return PMD_SIZE
        if self.cleared_puds:
            return PUD_SIZE
        if self.cleared_p4ds:
            return P4D_SIZE
        return PAGE_SIZE

    # -- flushing ------------------------------------------------------------------------
    def flush_mmu_tlbonly(self) -> None:
        """``tlb_flush_mmu_tlbonly``: nothing cleared, nothing flushed."""
        if not (
            self.freed_tables
            or self.cleared_ptes
            or self.cleared_pmds
            or self.cleared_puds
            or self.cleared_p4ds
        ):
            return
        self.mm.ctx.arch.tlb_flush(
            self.mm.asid,
            self.start,
            self.end,
            stride=self.unmap_size(),
            freed_tables=self.freed_tables,
            fullmm=self.fullmm,
        )
        self.flushes += 1
        self._reset_range()

    def flush_mmu(self) -> None:
        """``tlb_flush_mmu``: the TLB flush, then the batched pages go (batches emptied)."""
        self.flush_mmu_tlbonly()
        self._batch = self._nr = 0

    def end_vma(self) -> None:
        """``tlb_end_vma``: flush per VMA unless tearing the whole mm down."""
        if not self.fullmm:
            self.flush_mmu_tlbonly()

    def finish(self) -> None:
        """``tlb_finish_mmu``."""
        self.flush_mmu()

    # -- page batches (mm/mmu_gather.c) ----------------------------------------------------
    def _add(self, count: int, slots: int) -> tuple[int, bool]:
        """``__tlb_remove_folio_pages_size`` ``count`` times with ``slots`` slots each:
        (entries taken, True when the last one left the gather full)."""
        done = 0
        while done < count:
            lim = (MMU_GATHER_BUNDLE if self._batch == 0 else MAX_GATHER_BATCH) - 1
            need = max(1, -(-(lim - self._nr) // slots))
            take = min(need, count - done)
            self._nr += take * slots
            done += take
            if self._nr >= lim:
                if self._batch == MAX_GATHER_BATCH_COUNT:  # tlb_next_batch fails
                    return done, True
                self._batch += 1
                self._nr = 0
        return done, False

    def remove_ptes(self, addrs: Any, starts: Any, sizes: Any) -> None:
        """Present PTEs at ``addrs`` (ascending) were cleared; their folio batches start
        at positions ``starts`` with ``sizes`` pages each (``zap_present_ptes``). Widens
        the range and fills the batches, flushing whenever they run full.

        The batches are taken in runs of equal slot count (found with one
        ``np.flatnonzero``), each run added arithmetically by :meth:`_add`."""
        if len(addrs) == 0:
            return
        first = 0  # first PTE not yet in a flushed range
        nb = len(starts)
        if nb:
            two = np.asarray(sizes) != 1  # a multi-page batch takes two slots
            bounds = [0, *(np.flatnonzero(two[1:] != two[:-1]) + 1).tolist(), nb]
            for r in range(len(bounds) - 1):
                b, e = bounds[r], bounds[r + 1]
                first = self._add_batches(addrs, starts, sizes, b, e, 2 if two[b] else 1, first)
        self._flush_rest(addrs, first)

    def remove_pte_pages(self, addrs: list[int], starts: list[int]) -> None:
        """:meth:`remove_ptes` when every batch is one page (no large folio): the same
        range widening, slot filling and flushes, on Python lists."""
        if addrs:
            self._flush_rest(addrs, self._add_batches(addrs, starts, None, 0, len(starts), 1, 0))

    def _add_batches(
        self, addrs: Any, starts: Any, sizes: Any, b: int, e: int, slots: int, first: int
    ) -> int:
        """Batches ``b``..``e - 1`` (``slots`` slots each; ``sizes`` None: one page each)
        into the gather, flushing the PTE range so far whenever it runs full. Returns
        the first PTE not yet in a flushed range."""
        while b < e:
            taken, full = self._add(e - b, slots)
            b += taken
            if full:
                last = int(starts[b - 1]) + (0 if sizes is None else int(sizes[b - 1]) - 1)
                lo = int(addrs[first])
                self.flush_pte_range(lo, int(addrs[last]) - lo + PAGE_SIZE)
                self.flush_mmu()
                first = last + 1
        return first

    def _flush_rest(self, addrs: Any, first: int) -> None:
        """Widen the flush range over the PTEs after the last full-batch flush."""
        if first < len(addrs):
            lo = int(addrs[first])
            self.flush_pte_range(lo, int(addrs[-1]) - lo + PAGE_SIZE)

    def remove_folio(self) -> bool:
        """``tlb_remove_page_size`` for a PMD-mapped folio (one slot); True: now full."""
        return self._add(1, 1)[1]
