"""Lazy-MMU mode on arm64, with kpkeys batching (v5 18/18, v6 28/30; spec §4.9).

The generic lazy-MMU API after its 2025 rework (nesting, outermost section only, a
no-op in interrupt context) is :mod:`kpsim.arch.generic.lazy_mmu`; this models arm64's
``arch_enter_lazy_mmu_mode`` / ``arch_leave_lazy_mmu_mode``: set ``TIF_LAZY_MMU``;
with kpkeys_hardened_pgtables and batching on, switch to ``KPKEYS_CTX_PGTABLES`` once
on entry (saving the previous POR_EL1 in ``thread.por_el1_lazy_mmu``) and restore it on
exit before the deferred barriers are emitted. With the enter/leave API (series
``enter-leave``) a section opened where POR_EL1 already grants the context writes
nothing, and its exit restores nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.arch.arm64.kpkeys import arch_kpkeys_set_context
from kpsim.arch.generic.lazy_mmu import GenericLazyMmuMixin
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_REG_INVAL
from kpsim.mm.sched import Task


@mypyc_attr(native_class=False)  # see Arm64Base
class LazyMmuMixin(GenericLazyMmuMixin, Arm64Base):
    def _write_por_explored(
        self, value: int, hook: Callable[[str], None], isb: bool = True
    ) -> None:
        raise NotImplementedError  # provided by Arm64

    def lazy_mmu_enter_arch(self, task: Task) -> None:
        """Switch to ``KPKEYS_CTX_PGTABLES`` once for the section (batching on)."""
        hook = self.explore_hook
        if hook is not None:
            hook("lazy:enter")
        if not (self.hardened_pgtables and self.batching):
            return
        counters = self.k.counters
        if hook is not None:
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
        else:
            cpu = self.system.cpus[self.cpu_id]
            saved = arch_kpkeys_set_context(cpu, KPKEYS_CTX_PGTABLES, self.skip_unchanged)
            if saved == KPKEYS_PKEY_REG_INVAL:
                counters["kpkeys_enter_skipped"] += 1
        task.thread.por_el1_lazy_mmu = saved
        counters["kpkeys_guard_entries"] += 1

    def lazy_mmu_leave_arch(self, task: Task, pending: bool) -> None:
        """Restore POR_EL1 (its ISB left to the deferred barriers when pending), then
        emit the deferred kernel-PTE barriers: DSB ISHST + ISB."""
        cpu = self.system.cpus[self.cpu_id]
        if self.hardened_pgtables and self.batching:
            saved = task.thread.por_el1_lazy_mmu
            task.thread.por_el1_lazy_mmu = KPKEYS_PKEY_REG_INVAL
            hook = self.explore_hook
            if saved != KPKEYS_PKEY_REG_INVAL and hook is not None:
                self._write_por_explored(saved, hook, isb=not pending)
            elif saved != KPKEYS_PKEY_REG_INVAL:
                cpu.write_por_el1(saved)
                if not pending:
                    cpu.isb()
        if pending:
            self.system.counters["dsb"] += 1
            cpu.isb()
