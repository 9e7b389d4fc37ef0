"""State shared by the x86 arch modules (the Python form of x86's globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpsim.arch.x86.memory import Layout
from kpsim.hw.x86.cpu import CR4_PKS, X86Cpu
from kpsim.hw.x86.system import X86System
from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_series import Series
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


class X86Base:
    """Attributes every x86 mixin may use."""

    name = "x86"
    k: Kernel
    system: X86System
    layout: Layout
    cpu_id: int
    percpu: list[PerCpu]
    swapper_pg_dir: int  # physical address of init_top_pgt
    linear_map_policy: str  # "pte" (4K only, as with debug_pagealloc) or "block"
    hardened_pgtables: bool
    batching: bool
    series: Series
    skip_unchanged: bool
    guard_tif: bool
    guard_irq: bool
    pkrs_init: int
    split_lock_depth: int
    rodata_ro: bool
    irq_hook: Callable[[], None] | None
    explore_hook: Callable[[str], None] | None
    disabled: frozenset[str]
    kpkeys_split_hooks: Any
    static_tables: list[int]
    system_running: bool  # system_state == SYSTEM_RUNNING (split counters count)

    @property
    def cpu(self) -> X86Cpu:
        return self.system.cpus[self.cpu_id]

    def current(self) -> Task:
        return self.percpu[self.cpu_id].current

    def system_supports_poe(self) -> bool:
        """``arch_supports_kpkeys()``: every CPU has PKS enabled (CR4.PKS)."""
        return all(c.cr4 & CR4_PKS for c in self.system.cpus)

    def in_interrupt(self) -> bool:
        return self.percpu[self.cpu_id].irq_depth > 0

    def arch_kpkeys_set_context(self, ctx: int) -> int:
        raise NotImplementedError

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        raise NotImplementedError

    def arch_enter_lazy_mmu_mode(self) -> None:
        raise NotImplementedError

    def arch_leave_lazy_mmu_mode(self) -> None:
        raise NotImplementedError

    def flush_tlb_all(self) -> None:
        raise NotImplementedError

    # provided by PgtableUserMixin and PgtableMixin (declared here for the others)
    def pgd_ctor(self, pgd_pa: int) -> None:
        raise NotImplementedError

    def pt_store_batch(self, table_pa: int, index: Any, values: Any) -> int:
        raise NotImplementedError

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        raise NotImplementedError
