"""Which CPU kernel code runs on, and the shape of taking an exception there.

``on_cpu`` sets what ``smp_processor_id()`` returns for the enclosed code;
``interrupt``/``synchronous_exception`` are the generic entry (``irq_enter``/
``irq_exit``'s nesting count for interrupts, none for a synchronous exception) around
the arch's hooks that save, reset and restore the pkey register as its entry code does
(arm64 ``entry-common.c``, x86 ``idtentry`` with PKS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.base import ArchBase

T = TypeVar("T")


class OnCpu:
    """The context manager :meth:`GenericEntryMixin.on_cpu` returns: ``cpu_id`` set on
    entry, the previous one restored on exit (a plain class: entered once per kernel
    entry, cheaper than a generator-based one)."""

    __slots__ = ("arch", "cpu_id", "prev")

    def __init__(self, arch: ArchBase, cpu_id: int) -> None:
        self.arch = arch
        self.cpu_id = cpu_id
        self.prev = 0

    def __enter__(self) -> None:
        self.prev = self.arch.cpu_id
        self.arch.cpu_id = self.cpu_id

    def __exit__(self, *exc: Any) -> None:
        self.arch.cpu_id = self.prev


@mypyc_attr(native_class=False)  # see ArchBase
class GenericEntryMixin(ArchBase):
    def on_cpu(self, cpu_id: int) -> OnCpu:
        """Run the enclosed kernel code on ``cpu_id`` (what ``smp_processor_id`` returns)."""
        return OnCpu(self, cpu_id)

    def interrupt(self, cpu_id: int, handler: Callable[[], T]) -> T:
        """Take an interrupt on ``cpu_id`` and run ``handler`` as its handler."""
        return self._exception(cpu_id, handler, irq=True)

    def synchronous_exception(self, cpu_id: int, handler: Callable[[], T]) -> T:
        """Take a synchronous exception in the kernel on ``cpu_id`` (a data abort or
        #PF, a BRK or #UD...): the same entry and return, but ``in_interrupt()`` stays
        false in ``handler``."""
        return self._exception(cpu_id, handler, irq=False)

    def exception_entry_pkey(self) -> int | None:
        """The arch's entry code for the pkey register on the current CPU: save it
        and load the default; the saved value, or None when the CPUs have no pkeys."""
        raise NotImplementedError

    def exception_return_pkey(self, saved: int) -> None:
        """The arch's return path: write ``saved`` (the entry's result) back."""
        raise NotImplementedError

    def _exception(self, cpu_id: int, handler: Callable[[], T], irq: bool) -> T:
        """Entry (the pkey register saved and reset; an interrupt raises
        ``in_interrupt()``), ``handler``, and the return path restoring the register."""
        with self.on_cpu(cpu_id):
            pc = self.percpu[cpu_id]
            saved = self.exception_entry_pkey()
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
                if saved is not None:
                    self.exception_return_pkey(saved)
