"""arm64 TLB maintenance as Linux issues it (``arch/arm64/include/asm/tlbflush.h``,
``arch/arm64/include/asm/tlb.h``).

``flush_tlb_kernel_range``: DSB ISHST, one ``TLBI VAALE1IS`` per page (or
``TLBI VMALLE1IS`` above ``MAX_DVM_OPS`` pages), DSB ISH, ISB. Of a flush's two DSBs the
ISHST one is counted ``dsb``, the ISH one that waits for the broadcast TLBIs to
complete everywhere ``tlbi_sync``. User flushes use the
mm's ASID: ``flush_tlb_range`` is ``__flush_tlb_range`` (round the range to the
stride, then one ``TLBI ASIDE1IS`` when it spans ``MAX_DVM_OPS`` strides or more,
else one TLBI per stride: ``VALE1IS`` for a last-level flush, ``VAE1IS`` otherwise,
which also drops walk-cache entries; the non-last-level ones are counted apart as
``tlbi_va_nonleaf``, a subset of ``tlbi_va``). ``tlb_flush`` is arm64's flush of an
``mmu_gather`` (``last_level = !freed_tables``; a full-mm teardown flushes the ASID
once, and only when tables were freed). ``queue_pte_barriers`` models the barriers
after a kernel PTE write: deferred while in lazy-MMU mode (``TIF_LAZY_MMU_PENDING``),
issued at once otherwise.

Not modelled: FEAT_TLBIRANGE (the simulated CPUs do not have it, so the
``MAX_DVM_OPS`` cut-off applies, as ``__flush_tlb_range_limit_excess`` without
range TLBIs), the TTL level hint (no effect on what is invalidated here).
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.arch.generic.tlbflush import PAGE_SIZE, GenericTlbFlushMixin

#: ``MAX_DVM_OPS`` (``PTRS_PER_PTE``): strides above which a user range flush is an ASID flush
MAX_DVM_OPS = 512


@mypyc_attr(native_class=False)  # see Arm64Base
class TlbFlushMixin(GenericTlbFlushMixin, Arm64Base):
    @staticmethod
    def _flush_barriers(counters: Any) -> None:
        """The two DSBs of a TLB flush: ``DSB ISHST`` before the TLBIs (orders the
        table writes, counted ``dsb``) and ``DSB ISH`` after them, which waits until
        every PE of the inner-shareable domain has completed the broadcast
        invalidation (counted ``tlbi_sync``: its cost is not a plain barrier's)."""
        counters["dsb"] += 1
        counters["tlbi_sync"] += 1

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        cpu = self.cpu
        self._flush_barriers(self.system.counters)
        cpu.tlbi_range(start, end, None)
        cpu.isb()

    def _flush_tlb_range(
        self, asid: int, start: int, end: int, stride: int, last_level: bool
    ) -> None:
        """``__flush_tlb_range`` for a user mm (no ISB: not needed for user mappings)."""
        if end - start >= MAX_DVM_OPS * stride:  # __flush_tlb_range_limit_excess
            self.flush_tlb_mm(asid)
            return
        counters = self.system.counters
        self._flush_barriers(counters)
        n = (end - start) // stride
        if stride == PAGE_SIZE:
            self.cpu.tlbi_range(start, end, asid)
        else:
            counters["tlbi_range_calls"] += 1
            for va in range(start, end, stride):
                self.cpu.tlbi_va(va, asid)
        if not last_level:
            counters["tlbi_va_nonleaf"] += n

    def flush_tlb_page(self, asid: int, addr: int) -> None:
        """``flush_tlb_page``: one ``TLBI VALE1IS``."""
        self._flush_barriers(self.system.counters)
        self.cpu.tlbi_va(addr, asid)

    def flush_tlb_mm(self, asid: int) -> None:
        self._flush_barriers(self.system.counters)
        self.cpu.tlbi_asid(asid)

    def flush_tlb_all(self) -> None:
        self._flush_barriers(self.system.counters)
        self.cpu.tlbi_all()
        self.cpu.isb()

    def tlb_flush_fullmm(self, asid: int, freed_tables: bool) -> None:
        """arm64 ``tlb_flush`` of a full-mm teardown: only the walk cache must go (the
        ASID is not reused before a full invalidation), so the ASID is flushed once if
        tables were freed and nothing otherwise (a range flush is last-level unless
        tables went: :class:`~kpsim.arch.generic.tlbflush.GenericTlbFlushMixin`)."""
        if freed_tables:
            self.flush_tlb_mm(asid)

    def queue_pte_barriers(self) -> None:
        """``queue_pte_barriers``: defer in lazy-MMU mode, else DSB + ISB now."""
        task = self.current()
        if task.tif_lazy_mmu and not self.in_interrupt():
            task.tif_pending = True
            return
        self.system.counters["dsb"] += 1
        self.cpu.isb()
