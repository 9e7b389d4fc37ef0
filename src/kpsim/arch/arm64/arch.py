"""The arm64 architecture object: every arm64 mixin composed, plus the ArchOps hooks.

Only ``kpsim.machine`` builds one. Scripting users reach it as ``machine.arch`` and call
kernel functions on it by name (``set_memory_pkey``, ``split_kernel_leaf_mapping``...).
"""

from __future__ import annotations

from collections.abc import Callable

from kpsim.arch.arm64.base import PerCpu
from kpsim.arch.arm64.entry import EntryMixin
from kpsim.arch.arm64.kpkeys import (
    ThreadStruct,
    arch_kpkeys_restore_pkey_reg,
    arch_kpkeys_set_context,
    por_el1_init,
)
from kpsim.arch.arm64.memory import PAGE_OFFSET, Layout
from kpsim.arch.arm64.pgtable_user import PgtableUserMixin
from kpsim.arch.arm64.setup import SetupMixin
from kpsim.arch.arm64.vmalloc_arch import VmallocArchMixin
from kpsim.hw.arm64.system import Arm64System
from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_REG_INVAL
from kpsim.mm.kpkeys_series import DEFAULT_SERIES, SERIES, Series
from kpsim.mm.sched import Task


class Arm64(SetupMixin, EntryMixin, VmallocArchMixin, PgtableUserMixin):
    name = "arm64"

    def __init__(
        self,
        k: Kernel,
        system: Arm64System,
        *,
        linear_map: str = "pte",
        hardened_pgtables_config: bool = True,
        batching: bool = True,
        series: str = DEFAULT_SERIES,
    ) -> None:
        self.k = k
        self.system = system
        self.layout = Layout(system.mem.base)
        self.cpu_id = 0
        self.percpu = [
            PerCpu(Task(0, f"swapper/{i}", None, ThreadStruct())) for i in range(len(system.cpus))
        ]
        self.swapper_pg_dir = 0
        self.linear_map_policy = linear_map
        self.hardened_pgtables = False  # the static key: flipped by kpkeys init
        self.batching = batching
        self.set_series(SERIES[series])
        self.por_init = por_el1_init(hardened_pgtables_config)
        self.split_lock_depth = 0
        self.rodata_ro = False
        self.irq_hook: Callable[[], None] | None = None
        self.kpkeys_split_hooks = None
        self.kimage_pa = system.mem.base
        self.static_tables: list[int] = []
        self.vmemmap_range = (0, 0, 0)
        k.arch = self

    def set_series(self, series: Series) -> None:
        """Follow ``series``' kpkeys API, batching guard and exception return."""
        self.series = series
        self.skip_unchanged = series.skip_unchanged
        self.guard_tif = series.lazy_guard != "por"
        self.guard_irq = series.lazy_guard == "tif-irq"
        self.eret_always = series.eret_restore == "always"

    # -- kpkeys arch hooks (asm/kpkeys.h) ----------------------------------------------------
    def arch_kpkeys_set_context(self, ctx: int) -> int:
        """``arch_kpkeys_set_context`` (v4-v8) or ``arch_kpkeys_enter_context``
        (enter-leave: ``KPKEYS_PKEY_REG_INVAL`` when nothing had to be written)."""
        saved = arch_kpkeys_set_context(self.cpu, ctx, self.skip_unchanged)
        if saved == KPKEYS_PKEY_REG_INVAL:
            self.k.counters["kpkeys_enter_skipped"] += 1
        return saved

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        arch_kpkeys_restore_pkey_reg(self.cpu, value)

    # -- ArchOps -------------------------------------------------------------------------
    # (Layout.phys_to_virt's arithmetic inlined: these run per page and per entry, and
    # the VirtAddr NewType call is not free at run time)
    def page_to_virt(self, pfn: int) -> int:
        return PAGE_OFFSET + ((pfn << 12) - self.layout.memstart_addr)

    def phys_to_virt(self, pa: int) -> int:
        return PAGE_OFFSET + (pa - self.layout.memstart_addr)

    def clear_page(self, pfn: int) -> None:
        """``clear_page`` through the linear map on the current CPU (MMU-checked)."""
        va = PAGE_OFFSET + ((pfn << 12) - self.layout.memstart_addr)  # pfn_to_virt
        self.system.cpus[self.cpu_id].zero_page(va)

    def secondary_start(self) -> None:
        """Bring every CPU up: POE enabled with POR_EL1_INIT, TTBR1 = swapper_pg_dir."""
        from kpsim.arch.arm64.kpkeys import cpu_enable_poe

        for cpu, pc in zip(self.system.cpus, self.percpu, strict=True):
            if cpu.poe:
                cpu_enable_poe(cpu, self.por_init)
                pc.current.thread.por_el1 = self.por_init
            cpu.ttbr1 = self.swapper_pg_dir
