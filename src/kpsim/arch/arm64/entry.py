"""Exceptions, interrupts and context switches on arm64, as far as POR_EL1 goes.

Models the kpkeys parts of ``arch/arm64/kernel/entry-common.c`` and
``process.c`` (spec §3.6): an interrupt can be injected on any CPU at any point; its
handler runs in the default context (entry resets POR_EL1 only if it differs, and the
return path restores it); ``switch_to`` saves and restores the per-thread value. The
arch-neutral entry points (``on_cpu``, ``interrupt``, ``synchronous_exception``) are
:mod:`kpsim.arch.generic.entry`'s.
"""

from __future__ import annotations

from typing import TypeVar

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.arch.arm64.kpkeys import (
    ThreadStruct,
    context_switch_por,
    exception_entry_por,
    exception_return_por,
)
from kpsim.arch.generic.entry import GenericEntryMixin
from kpsim.mm.sched import Task

T = TypeVar("T")


@mypyc_attr(native_class=False)  # see Arm64Base
class EntryMixin(GenericEntryMixin, Arm64Base):
    def exception_entry_pkey(self) -> int | None:
        """Save POR_EL1 in ``pt_regs`` and reset it (``exception_entry_por``)."""
        if not self.system_supports_poe():
            return None
        cpu = self.cpu
        if "reset-on-entry" in self.disabled:
            saved = cpu.por_el1
            cpu.context_sync()
            return saved
        return exception_entry_por(cpu, self.por_init)

    def exception_return_pkey(self, saved: int) -> None:
        """Write ``pt_regs::por_el1`` back (``exception_return_por``)."""
        cpu = self.cpu
        if "restore-on-return" in self.disabled:
            cpu.context_sync()
        else:
            exception_return_por(cpu, saved, self.por_init, self.eret_always)

    def switch_to(self, cpu_id: int, nxt: Task) -> None:
        """``__switch_to``: POR_EL1 save/restore, then TTBR0/ASID of the next mm."""
        pc = self.percpu[cpu_id]
        prev = pc.current
        cpu = self.system.cpus[cpu_id]
        if prev is nxt:
            return
        if self.system_supports_poe() and "por-save-on-switch" not in self.disabled:
            context_switch_por(cpu, prev.thread, nxt.thread)
        pc.current = nxt
        mm = nxt.mm
        if mm is not None:
            cpu.switch_ttbr0(mm.pgd_pa, mm.asid)
        self.k.counters["context_switches"] += 1

    def copy_thread(self, parent: Task) -> ThreadStruct:
        """``copy_thread``: the child's saved POR_EL1 is the parent's current value."""
        live = self.system.cpus[self.cpu_id].por_el1 if self.current() is parent else 0
        return ThreadStruct(por_el1=live or parent.thread.por_el1)
