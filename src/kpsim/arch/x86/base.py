"""State shared by the x86 arch modules (the Python form of x86's globals)."""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from kpsim.arch.generic.base import ArchBase
from kpsim.arch.x86.memory import Layout
from kpsim.hw.x86.cpu import CR4_PKS, X86Cpu
from kpsim.hw.x86.system import X86System
from kpsim.mm.sched import Task


class PerCpu:
    """Per-CPU arch data: the running task, interrupt depth, the loaded mm's PCIDs."""

    __slots__ = ("current", "irq_depth", "loaded_mm", "pcid_slots")

    def __init__(self, idle: Task) -> None:
        self.current = idle
        self.irq_depth = 0
        self.loaded_mm: Any = None  # cpu_tlbstate.loaded_mm
        #: cpu_tlbstate.ctxs: mm id -> PCID (1..TLB_NR_DYN_ASIDS), most recent last
        self.pcid_slots: dict[int, int] = {}


@mypyc_attr(native_class=False)  # see ArchBase
class X86Base(ArchBase):
    """Attributes every x86 mixin may use (the arch-neutral ones are
    :class:`~kpsim.arch.generic.base.ArchBase`'s)."""

    name = "x86"
    system: X86System
    layout: Layout
    percpu: list[PerCpu]
    pkrs_init: int
    system_running: bool  # system_state == SYSTEM_RUNNING (split counters count)

    @property
    def cpu(self) -> X86Cpu:
        return self.system.cpus[self.cpu_id]

    def system_supports_poe(self) -> bool:
        """``arch_supports_kpkeys()``: every CPU has PKS enabled (CR4.PKS)."""
        return all(c.cr4 & CR4_PKS for c in self.system.cpus)

    PKEY_REG = "IA32_PKRS"

    def pkey_reg(self, cpu_id: int) -> int:
        return self.system.cpus[cpu_id].pkrs

    def pkey_reg_init(self) -> int:
        return self.pkrs_init

    def flush_tlb_all(self) -> None:
        raise NotImplementedError

    # provided by PgtableUserMixin and PgtableMixin (declared here for the others)
    def pgd_ctor(self, pgd_pa: int) -> None:
        raise NotImplementedError

    def pt_store_batch(self, table_pa: int, index: Any, values: Any) -> int:
        raise NotImplementedError

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        raise NotImplementedError
