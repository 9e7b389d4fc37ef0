"""arm64 TLB maintenance as Linux issues it (``arch/arm64/include/asm/tlbflush.h``).

``flush_tlb_kernel_range``: DSB ISHST, one ``TLBI VAALE1IS`` per page (or
``TLBI VMALLE1IS`` above ``MAX_DVM_OPS`` pages), DSB ISH, ISB. User flushes use the
mm's ASID. ``queue_pte_barriers`` models the barriers after a kernel PTE write:
deferred while in lazy-MMU mode (``TIF_LAZY_MMU_PENDING``), issued at once otherwise.
"""

from __future__ import annotations

from kpsim.arch.arm64.base import Arm64Base


class TlbFlushMixin(Arm64Base):
    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        cpu = self.cpu
        self.system.counters["dsb"] += 2
        cpu.tlbi_range(start, end, None)
        cpu.isb()

    def flush_tlb_range(self, asid: int, start: int, end: int) -> None:
        """``__flush_tlb_range`` for a user mm (no ISB: not needed for user mappings)."""
        self.system.counters["dsb"] += 2
        self.cpu.tlbi_range(start, end, asid)

    def flush_tlb_page(self, asid: int, addr: int) -> None:
        self.system.counters["dsb"] += 2
        self.cpu.tlbi_va(addr, asid)

    def flush_tlb_mm(self, asid: int) -> None:
        self.system.counters["dsb"] += 2
        self.cpu.tlbi_asid(asid)

    def flush_tlb_all(self) -> None:
        self.system.counters["dsb"] += 2
        self.cpu.tlbi_all()
        self.cpu.isb()

    def queue_pte_barriers(self) -> None:
        """``queue_pte_barriers``: defer in lazy-MMU mode, else DSB + ISB now."""
        task = self.current()
        if task.tif_lazy_mmu and not self.in_interrupt():
            task.tif_pending = True
            return
        self.system.counters["dsb"] += 1
        self.cpu.isb()
