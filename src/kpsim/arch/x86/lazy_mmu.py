"""Lazy-MMU mode on x86 with kpkeys batching, exceptions and context switches.

Lazy MMU: the generic nesting rules (:mod:`kpsim.arch.generic.lazy_mmu`: outermost
section only, a no-op in interrupt context) with the arm64 series' batching (spec §4.9):
on entry with the feature and batching on, switch to ``KPKEYS_CTX_PGTABLES`` once (a
WRMSR to IA32_PKRS), saving the previous value in the thread; restore it on exit. x86
needs no deferred barrier.

Exceptions (Ira Weiny's PKS series, ``idtentry``): entry saves IA32_PKRS in
``pt_regs`` and loads the initial value (WRMSR only if it differs); the return path
writes the saved value back (only if it differs: ``pks_write_pkrs`` skips equal
values). Context switch: ``pks_thread_switch`` writes the next thread's saved value if
it differs; then ``switch_mm_irqs_off`` loads CR3 with the mm's PCID.
"""

from __future__ import annotations

from typing import Any, TypeVar

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.entry import GenericEntryMixin
from kpsim.arch.generic.lazy_mmu import GenericLazyMmuMixin
from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.kpkeys import (
    ThreadStruct,
    arch_kpkeys_restore_pkey_reg,
    arch_kpkeys_set_context,
    context_switch_pkrs,
    exception_entry_pkrs,
    exception_return_pkrs,
)
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_REG_INVAL
from kpsim.mm.sched import Task

T = TypeVar("T")
#: ``TLB_NR_DYN_ASIDS``: PCIDs a CPU keeps for recently run mms (PCID 0 is the kernel's)
TLB_NR_DYN_ASIDS = 6


@mypyc_attr(native_class=False)  # see ArchBase
class LazyMmuEntryMixin(GenericLazyMmuMixin, GenericEntryMixin, X86Base):
    # -- lazy MMU (the arch part; the nesting rules are GenericLazyMmuMixin's) ----------
    def lazy_mmu_enter_arch(self, task: Task) -> None:
        """Switch to ``KPKEYS_CTX_PGTABLES`` once for the section (batching on)."""
        if self.hardened_pgtables and self.batching and self.system_supports_poe():
            saved = arch_kpkeys_set_context(self.cpu, KPKEYS_CTX_PGTABLES, self.skip_unchanged)
            if saved == KPKEYS_PKEY_REG_INVAL:
                self.k.counters["kpkeys_enter_skipped"] += 1
            task.thread.pkrs_lazy_mmu = saved
            self.k.counters["kpkeys_guard_entries"] += 1

    def lazy_mmu_leave_arch(self, task: Task, pending: bool) -> None:
        """Restore PKRS (no deferred barriers: x86 needs none)."""
        if self.hardened_pgtables and self.batching:
            saved = task.thread.pkrs_lazy_mmu
            task.thread.pkrs_lazy_mmu = KPKEYS_PKEY_REG_INVAL
            arch_kpkeys_restore_pkey_reg(self.cpu, saved)

    # -- exceptions ----------------------------------------------------------------------
    def exception_entry_pkey(self) -> int | None:
        """``pks_save_pt_regs``: save PKRS in ``pt_regs``, load the initial value."""
        if not self.system_supports_poe() or "reset-on-entry" in self.disabled:
            return None
        return exception_entry_pkrs(self.cpu, self.pkrs_init)

    def exception_return_pkey(self, saved: int) -> None:
        """``pks_restore_pt_regs``: write the saved value back (if it differs)."""
        if "restore-on-return" not in self.disabled:
            exception_return_pkrs(self.cpu, saved)

    # -- context switch ------------------------------------------------------------------
    def switch_to(self, cpu_id: int, nxt: Task) -> None:
        """``__switch_to`` (PKRS) then ``switch_mm_irqs_off`` (CR3 and PCID)."""
        pc = self.percpu[cpu_id]
        prev = pc.current
        if prev is nxt:
            return
        cpu = self.system.cpus[cpu_id]
        if self.system_supports_poe() and "por-save-on-switch" not in self.disabled:
            context_switch_pkrs(cpu, prev.thread, nxt.thread)
        pc.current = nxt
        if nxt.mm is not None and nxt.mm is not pc.loaded_mm:
            self.switch_mm_irqs_off(cpu_id, nxt.mm)
        self.k.counters["context_switches"] += 1

    def switch_mm_irqs_off(self, cpu_id: int, mm: Any) -> None:
        """Load CR3 with the mm's PGD and a PCID: a cached one without a flush
        (CR3 bit 63), else a new slot (evicting the oldest) with a flush."""
        pc = self.percpu[cpu_id]
        cpu = self.system.cpus[cpu_id]
        self.pgd_ctor(mm.pgd_pa)
        slots = pc.pcid_slots
        pcid = slots.pop(mm.asid, None)
        noflush = pcid is not None
        if pcid is None:
            used = set(slots.values())
            free = [p for p in range(1, TLB_NR_DYN_ASIDS + 1) if p not in used]
            if free:
                pcid = free[0]
            else:
                oldest = next(iter(slots))
                pcid = slots.pop(oldest)
        slots[mm.asid] = pcid
        cpu.mov_cr3(mm.pgd_pa | pcid | (1 << 63 if noflush else 0))
        pc.loaded_mm = mm
        self.k.counters["switch_mm"] += 1

    def copy_thread(self, parent: Task) -> ThreadStruct:
        """``copy_thread``: the child's saved PKRS is the parent's current value."""
        live = self.system.cpus[self.cpu_id].pkrs if self.current() is parent else None
        return ThreadStruct(pkrs=live if live is not None else parent.thread.pkrs)

    def arch_kpkeys_set_context(self, ctx: int) -> int:
        saved = arch_kpkeys_set_context(self.cpu, ctx, self.skip_unchanged)
        if saved == KPKEYS_PKEY_REG_INVAL:
            self.k.counters["kpkeys_enter_skipped"] += 1
        return saved

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        arch_kpkeys_restore_pkey_reg(self.cpu, value)
