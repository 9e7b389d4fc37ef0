"""Lazy-MMU mode on x86 with kpkeys batching, exceptions and context switches.

Lazy MMU: the generic nesting rules (:mod:`kpsim.arch.generic.lazy_mmu`: outermost
section only, a no-op in interrupt context) with the arm64 series' batching (spec §4.9):
on entry with the feature and batching on, switch to ``KPKEYS_CTX_PGTABLES`` once (a
WRMSR to IA32_PKRS), saving the previous value in the thread; restore it on exit. x86
needs no deferred barrier.

Exceptions (Ira Weiny's PKS series, v9-v11, 2022: ``pks_save_pt_regs`` and
``pks_restore_pt_regs``, called by the generic entry code's ``arch_save_aux_pt_regs``
and ``arch_restore_aux_pt_regs`` in ``irqentry_enter``/``irqentry_exit``): entry saves
PKRS in the auxiliary ``pt_regs`` and loads the initial value; the return path writes
the saved value back; both through ``pks_write_pkrs``, whose per-CPU ``pkrs_cache``
skips the WRMSR when the value is already there. Context switch: ``__switch_to`` calls
``pks_write_current`` (earlier postings: ``x86_pkrs_load``), which writes the incoming
thread's saved value if it differs; then ``switch_mm_irqs_off`` loads CR3 with the
mm's PCID. The series saves the thread's software copy (``thread.pks_saved_pkrs``,
kept up to date by ``pks_update_protection``); kpsim saves the MSR itself, as arm64
saves POR_EL1: the same value while every change goes through the kpkeys hooks.

With ``kpsim explore`` attached (``explore_hook``), each kpkeys WRMSR (guards and
lazy-MMU entry/exit) runs with points before and after it (``pkrs_write:before``,
``pkrs_write:after``) and ``lazy:enter`` marks a section's entry. There is no
``isb:after``: WRMSR to IA32_PKRS is not serialising, but memory accesses the new
value governs do not execute before it completes (the ordering of WRPKRU, which the
series' ``pks_write_pkrs`` comment cites), so no barrier follows it and nothing can
run between the write and its effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.entry import GenericEntryMixin
from kpsim.arch.generic.kpkeys import kpkeys_check_context
from kpsim.arch.generic.lazy_mmu import GenericLazyMmuMixin
from kpsim.arch.x86.base import X86Base
from kpsim.arch.x86.kpkeys import (
    PKRS_MASK,
    PKRS_SAVED,
    ThreadStruct,
    arch_kpkeys_restore_pkey_reg,
    arch_kpkeys_set_context,
    context_switch_pkrs,
    exception_entry_pkrs,
    exception_return_pkrs,
    pkrs_set_kpkeys_context,
)
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS
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
        hook = self.explore_hook
        if hook is not None:
            hook("lazy:enter")
        if self.hardened_pgtables and self.batching and self.system_supports_poe():
            saved = self.arch_kpkeys_set_context(KPKEYS_CTX_PGTABLES)
            task.thread.pkrs_lazy_mmu = saved
            self.k.counters["kpkeys_guard_entries"] += 1

    def lazy_mmu_leave_arch(self, task: Task, pending: bool) -> None:
        """Restore PKRS (no deferred barriers: x86 needs none)."""
        if self.hardened_pgtables and self.batching:
            saved = task.thread.pkrs_lazy_mmu
            task.thread.pkrs_lazy_mmu = KPKEYS_PKEY_REG_INVAL
            self.arch_kpkeys_restore_pkey_reg(saved)

    # -- exceptions ----------------------------------------------------------------------
    def exception_entry_pkey(self) -> int | None:
        """``pks_save_pt_regs``: save PKRS in ``pt_regs``, load the initial value
        (``kpsim explore --disable reset-on-entry``: saved, not loaded)."""
        if not self.system_supports_poe():
            return None
        if "reset-on-entry" in self.disabled:
            return self.cpu.pkrs
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

    # -- kpkeys arch hooks ------------------------------------------------------------
    def arch_kpkeys_set_context(self, ctx: int) -> int:
        """``arch_kpkeys_set_context``/``arch_kpkeys_enter_context`` on IA32_PKRS; with
        ``kpsim explore`` attached, the same with points around the WRMSR."""
        hook = self.explore_hook
        if hook is not None:
            return self._set_context_explored(ctx, hook)
        saved = arch_kpkeys_set_context(self.cpu, ctx, self.skip_unchanged)
        if saved == KPKEYS_PKEY_REG_INVAL:
            self.k.counters["kpkeys_enter_skipped"] += 1
        return saved

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        hook = self.explore_hook
        if hook is not None and value != KPKEYS_PKEY_REG_INVAL:
            self._wrmsr_pkrs_explored(value & PKRS_MASK, hook)
            return
        arch_kpkeys_restore_pkey_reg(self.cpu, value)

    # -- the same, one step at a time, with kpsim explore's points between the steps --------
    def _set_context_explored(self, ctx: int, hook: Callable[[str], None]) -> int:
        cpu = self.cpu
        kpkeys_check_context(ctx)
        prev = cpu.pkrs
        new = pkrs_set_kpkeys_context(prev, ctx)
        if self.skip_unchanged and new == prev:
            self.k.counters["kpkeys_enter_skipped"] += 1
            return KPKEYS_PKEY_REG_INVAL
        self._wrmsr_pkrs_explored(new, hook)
        return prev | PKRS_SAVED

    def _wrmsr_pkrs_explored(self, value: int, hook: Callable[[str], None]) -> None:
        """WRMSR to IA32_PKRS with a point before and after it (no barrier follows: a
        later access the new value governs waits for the write, as after WRPKRU)."""
        hook("pkrs_write:before")
        self.cpu.wrmsr(MSR_IA32_PKRS, value)
        hook("pkrs_write:after")
