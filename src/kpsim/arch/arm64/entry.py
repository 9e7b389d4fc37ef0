"""Exceptions, interrupts and context switches on arm64, as far as POR_EL1 goes.

Models the kpkeys parts of ``arch/arm64/kernel/entry-common.c`` and
``process.c`` (spec §3.6): an interrupt can be injected on any CPU at any point; its
handler runs in the default context (entry resets POR_EL1 only if it differs, and the
return path restores it); ``switch_to`` saves and restores the per-thread value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import Arm64Base
from kpsim.arch.arm64.kpkeys import (
    ThreadStruct,
    context_switch_por,
    exception_entry_por,
    exception_return_por,
)
from kpsim.mm.sched import Task

T = TypeVar("T")


class OnCpu:
    """The context manager :meth:`EntryMixin.on_cpu` returns: ``cpu_id`` set on entry,
    the previous one restored on exit (a plain class: entered once per kernel entry,
    cheaper than a generator-based one)."""

    __slots__ = ("arch", "cpu_id", "prev")

    def __init__(self, arch: Arm64Base, cpu_id: int) -> None:
        self.arch = arch
        self.cpu_id = cpu_id
        self.prev = 0

    def __enter__(self) -> None:
        self.prev = self.arch.cpu_id
        self.arch.cpu_id = self.cpu_id

    def __exit__(self, *exc: Any) -> None:
        self.arch.cpu_id = self.prev


@mypyc_attr(native_class=False)  # see Arm64Base
class EntryMixin(Arm64Base):
    def on_cpu(self, cpu_id: int) -> OnCpu:
        """Run the enclosed kernel code on ``cpu_id`` (what ``smp_processor_id`` returns)."""
        return OnCpu(self, cpu_id)

    def interrupt(self, cpu_id: int, handler: Callable[[], T]) -> T:
        """Take an IRQ on ``cpu_id`` and run ``handler`` as its handler."""
        return self._exception(cpu_id, handler, irq=True)

    def synchronous_exception(self, cpu_id: int, handler: Callable[[], T]) -> T:
        """Take a synchronous exception at EL1 on ``cpu_id`` (a data abort, a BRK...):
        the same entry and return, but ``in_interrupt()`` stays false in ``handler``."""
        return self._exception(cpu_id, handler, irq=False)

    def _exception(self, cpu_id: int, handler: Callable[[], T], irq: bool) -> T:
        with self.on_cpu(cpu_id):
            pc = self.percpu[cpu_id]
            cpu = self.cpu
            poe = self.system_supports_poe()
            if poe and "reset-on-entry" in self.disabled:
                saved = cpu.por_el1
                cpu.context_sync()
            else:
                saved = exception_entry_por(cpu, self.por_init) if poe else 0
            if irq:
                pc.irq_depth += 1
                self.k.counters["interrupts"] += 1
            else:
                self.k.counters["sync_exceptions"] += 1
            try:
                return handler()
            finally:
                if irq:
                    pc.irq_depth -= 1
                if poe and "restore-on-return" in self.disabled:
                    cpu.context_sync()
                elif poe:
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
