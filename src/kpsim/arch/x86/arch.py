"""The x86 architecture object: every x86 mixin composed, plus the ArchOps hooks.

Only ``kpsim.machine`` builds one. Scripting users reach it as ``machine.arch`` and call
kernel functions on it by name (``set_memory_pkey``, ``change_page_attr_set_clr``,
``arch_report_meminfo``, ``lookup_address``...).
"""

from __future__ import annotations

from collections.abc import Callable

from mypy_extensions import mypyc_attr

from kpsim.arch.x86.base import PerCpu
from kpsim.arch.x86.init import KIMAGE_SIZE, EarlyAlloc, InitMixin
from kpsim.arch.x86.kpkeys import ThreadStruct, pkrs_init_value
from kpsim.arch.x86.lazy_mmu import LazyMmuEntryMixin
from kpsim.arch.x86.memory import ISA_END_ADDRESS, PAGE_OFFSET, PHYSICAL_START, Layout
from kpsim.arch.x86.pgtable_user import PgtableUserMixin
from kpsim.arch.x86.vmalloc_arch import VmallocArchMixin
from kpsim.hw.x86.cpu import CR4_PKS, CR4_SMAP, CR4_SMEP
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS
from kpsim.mm.sched import Task

ISA_HOLE_START = 0xA_0000


@mypyc_attr(native_class=False)  # see ArchBase
class X86(InitMixin, LazyMmuEntryMixin, VmallocArchMixin, PgtableUserMixin):
    name = "x86"

    DEFAULT_LINEAR_MAP = "block"

    def new_percpu(self, idle: Task) -> PerCpu:
        return PerCpu(idle)

    def new_thread(self) -> ThreadStruct:
        return ThreadStruct()

    def arch_init(self, hardened_pgtables_config: bool) -> None:
        """``PKS_INIT_VALUE``, the image at ``PHYSICAL_START``, the direct-map counters."""
        self.layout = Layout()
        self.pkrs_init = pkrs_init_value(hardened_pgtables_config)
        self.kimage_pa = PHYSICAL_START
        self.kimage_size = KIMAGE_SIZE
        self.direct_pages_count = [0, 0, 0, 0]
        self.system_running = False
        self.mapped_end = 0

    # -- policy --------------------------------------------------------------------------
    def force_pte_mapping(self) -> bool:
        """``arch_has_pte_only_direct_map()``: the direct map uses 4 KiB pages only."""
        return self.linear_map_policy == "pte"

    # -- boot ------------------------------------------------------------------------------
    @staticmethod
    def e820_ram(memory: int) -> list[tuple[int, int]]:
        """The E820 usable ranges of a machine with ``memory`` bytes of DRAM from 0:
        everything but the legacy ISA hole ``[640K, 1M)`` (VGA memory and BIOS ROMs),
        which ``e820__memblock_setup`` leaves out of memblock."""
        return [(0, ISA_HOLE_START), (ISA_END_ADDRESS, memory - ISA_END_ADDRESS)]

    def paging_init(
        self, early_alloc: EarlyAlloc, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """The image's static tables, ``init_mem_mapping``, the vmemmap (``sparse_init``,
        later in Linux's ``setup_arch``); every CPU's CR3."""
        self.map_kernel()
        self.init_mem_mapping(early_alloc, progress)
        self.vmemmap_populate(early_alloc)
        for cpu in self.system.cpus:
            cpu.mov_cr3(self.swapper_pg_dir)

    def secondary_start(self) -> None:
        """Every CPU: CR4.SMEP/SMAP, and with PKS CR4.PKS and IA32_PKRS =
        ``PKS_INIT_VALUE`` (``pks_setup``)."""
        for cpu, pc in zip(self.system.cpus, self.percpu, strict=True):
            cpu.mov_cr4(cpu.cr4 | CR4_SMEP | CR4_SMAP)
            if self.system.pks:
                cpu.mov_cr4(cpu.cr4 | CR4_PKS)
                cpu.wrmsr(MSR_IA32_PKRS, self.pkrs_init)
                pc.current.thread.pkrs = self.pkrs_init

    def mark_linear_text_alias_ro(self) -> None:
        """Nothing at this point on x86: ``mark_rodata_ro`` makes the direct-map alias
        of text and rodata read-only (``cpa_process_alias``)."""

    # -- ArchOps -------------------------------------------------------------------------
    def page_to_virt(self, pfn: int) -> int:
        return PAGE_OFFSET + (pfn << 12)

    def phys_to_virt(self, pa: int) -> int:
        return PAGE_OFFSET + pa

    def clear_page(self, pfn: int) -> None:
        """``clear_page`` through the direct map on the current CPU (MMU-checked)."""
        self.system.cpus[self.cpu_id].zero_page(PAGE_OFFSET + (pfn << 12))
