"""The generic lazy-MMU API (``include/linux/pgtable.h`` after the 2025 rework:
``lazy_mmu_mode_enable``/``disable``): nesting counted per task, the arch's hooks run
only for the outermost section, and the whole API is a no-op in interrupt context.

The arch supplies what its ``arch_enter_lazy_mmu_mode``/``arch_leave_lazy_mmu_mode``
do beyond ``TIF_LAZY_MMU``: with kpkeys batching, switch the pkey register to
``KPKEYS_CTX_PGTABLES`` once on entry and restore it on exit (spec §4.9), and on arm64
emit the barriers deferred by kernel PTE writes (``TIF_LAZY_MMU_PENDING``).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.base import ArchBase
from kpsim.mm.sched import Task


@mypyc_attr(native_class=False)  # see ArchBase
class GenericLazyMmuMixin(ArchBase):
    def lazy_mmu_enter_arch(self, task: Task) -> None:
        """The arch's part of entering the outermost section (``TIF_LAZY_MMU`` set)."""
        raise NotImplementedError

    def lazy_mmu_leave_arch(self, task: Task, pending: bool) -> None:
        """The arch's part of leaving it, while ``TIF_LAZY_MMU`` is still set
        (``pending``: ``TIF_LAZY_MMU_PENDING``, barriers to emit)."""
        raise NotImplementedError

    # (in_interrupt(), current() and cpu read through one per-CPU lookup: hot paths)
    def arch_enter_lazy_mmu_mode(self) -> None:
        pc = self.percpu[self.cpu_id]
        if pc.irq_depth > 0:  # in_interrupt()
            return
        task = pc.current
        task.lazy_mmu_nesting += 1
        if task.lazy_mmu_nesting > 1:
            self.k.counters["lazy_mmu_nested"] += 1
            return
        task.tif_lazy_mmu = True
        self.k.counters["lazy_mmu_sections"] += 1
        self.lazy_mmu_enter_arch(task)

    def arch_leave_lazy_mmu_mode(self) -> None:
        pc = self.percpu[self.cpu_id]
        if pc.irq_depth > 0:  # in_interrupt()
            return
        task = pc.current
        task.lazy_mmu_nesting -= 1
        if task.lazy_mmu_nesting > 0:
            return
        self.lazy_mmu_leave_arch(task, task.tif_pending)
        task.tif_lazy_mmu = False
        task.tif_pending = False
