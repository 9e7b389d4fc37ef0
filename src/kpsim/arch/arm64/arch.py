"""The arm64 architecture object: every arm64 mixin composed, plus the ArchOps hooks.

Only ``kpsim.machine`` builds one. Scripting users reach it as ``machine.arch`` and call
kernel functions on it by name (``set_memory_pkey``, ``split_kernel_leaf_mapping``...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.base import PerCpu
from kpsim.arch.arm64.entry import EntryMixin
from kpsim.arch.arm64.kpkeys import (
    ThreadStruct,
    arch_kpkeys_restore_pkey_reg,
    arch_kpkeys_set_context,
    por_el1_init,
    por_set_kpkeys_context,
)
from kpsim.arch.arm64.memory import PAGE_OFFSET, Layout
from kpsim.arch.arm64.pgtable_user import PgtableUserMixin
from kpsim.arch.arm64.setup import SetupMixin
from kpsim.arch.arm64.vmalloc_arch import VmallocArchMixin
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_REG_INVAL
from kpsim.mm.kpkeys_series import Series
from kpsim.mm.sched import Task

_PAGE_OFFSET_VPN: Final = PAGE_OFFSET >> 12


@mypyc_attr(native_class=False)  # see Arm64Base
class Arm64(SetupMixin, EntryMixin, VmallocArchMixin, PgtableUserMixin):
    name = "arm64"

    def new_percpu(self, idle: Task) -> PerCpu:
        return PerCpu(idle)

    def new_thread(self) -> ThreadStruct:
        return ThreadStruct()

    def arch_init(self, hardened_pgtables_config: bool) -> None:
        """The linear map's layout, ``POR_EL1_INIT``, the image at the start of DRAM."""
        self.layout = Layout(self.system.mem.base)
        self.por_init = por_el1_init(hardened_pgtables_config)
        self.kimage_pa = self.system.mem.base

    def set_series(self, series: Series) -> None:
        """Follow ``series``' kpkeys API, batching guard and exception return."""
        super().set_series(series)
        self.eret_always = series.eret_restore == "always"

    # -- kpkeys arch hooks (asm/kpkeys.h) ----------------------------------------------------
    def arch_kpkeys_set_context(self, ctx: int) -> int:
        """``arch_kpkeys_set_context`` (v4-v8) or ``arch_kpkeys_enter_context``
        (enter-leave: ``KPKEYS_PKEY_REG_INVAL`` when nothing had to be written)."""
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
            self._write_por_explored(value, hook)
            return
        arch_kpkeys_restore_pkey_reg(self.cpu, value)

    # -- the same, one step at a time, with kpsim explore's points between the steps --------
    def _set_context_explored(self, ctx: int, hook: Callable[[str], None]) -> int:
        cpu = self.cpu
        prev = cpu.por_el1
        new = por_set_kpkeys_context(prev, ctx)
        if self.skip_unchanged and new == prev:
            self.k.counters["kpkeys_enter_skipped"] += 1
            return KPKEYS_PKEY_REG_INVAL
        self._write_por_explored(new, hook)
        return prev

    def _write_por_explored(
        self, value: int, hook: Callable[[str], None], isb: bool = True
    ) -> None:
        """MSR POR_EL1 (+ ISB unless switched off), with a point before, between, after."""
        cpu = self.cpu
        hook("por_write:before")
        cpu.write_por_el1(value)
        hook("por_write:after")
        if isb and "isb-after-por-write" not in self.disabled:
            cpu.isb()
            hook("isb:after")

    # -- ArchOps -------------------------------------------------------------------------
    # (Layout.phys_to_virt's arithmetic inlined: these run per page and per entry, and
    # the VirtAddr NewType call is not free at run time)
    def page_to_virt(self, pfn: int) -> int:
        return PAGE_OFFSET + ((pfn << 12) - self.layout.memstart_addr)

    def phys_to_virt(self, pa: int) -> int:
        return PAGE_OFFSET + (pa - self.layout.memstart_addr)

    def clear_page(self, pfn: int) -> None:
        """``clear_page`` through the linear map on the current CPU (MMU-checked), by
        the page number of ``pfn_to_virt(pfn)`` (word-sized, where the VA is not)."""
        vpn = _PAGE_OFFSET_VPN + pfn - (self.layout.memstart_addr >> 12)
        self.system.cpus[self.cpu_id].zero_kernel_page(vpn)

    def secondary_start(self) -> None:
        """Bring every CPU up: POE enabled with POR_EL1_INIT, TTBR1 = swapper_pg_dir."""
        from kpsim.arch.arm64.kpkeys import cpu_enable_poe

        for cpu, pc in zip(self.system.cpus, self.percpu, strict=True):
            if cpu.poe:
                cpu_enable_poe(cpu, self.por_init)
                pc.current.thread.por_el1 = self.por_init
            cpu.ttbr1 = self.swapper_pg_dir
