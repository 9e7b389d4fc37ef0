"""The composition root: build and boot a simulated arm64 machine running Linux.

Boot follows arm64 Linux in order (``start_kernel`` -> ``setup_arch`` ->
``paging_init``; ``mm_core_init`` -> ``mem_init``):

1. memblock holds all RAM; the kernel image is reserved;
2. ``paging_init``: the image is mapped from static tables (rodata still writable);
   the linear map and the vmemmap are created with early tables from memblock
   (through kpkeys' PPA when the feature is early-enabled);
3. every CPU enables POE with ``POR_EL1_INIT`` and loads TTBR1;
4. ``mem_init``: memblock hands the remaining memory to the buddy allocator, then
   ``kpkeys_hardened_pgtables_init()`` switches the feature on with the configured
   table allocator (:func:`make_allocator`: the seed's "minimal", v6's "pba", or the
   "grouped"/"reserve" comparison policies); for the v6-style allocators the arch's
   ``kpkeys_hardened_pgtables_init_late()`` follows at once (early region, PPA and
   static tables keyed). ``Machine.timeline`` samples the linear map's composition on
   every allocator event;
5. ``mark_linear_text_alias_ro`` (``smp_cpus_done``): the linear alias of text and
   rodata, ``swapper_pg_dir`` included, becomes read-only;
6. optionally ``mark_rodata_ro``: the image's rodata (``swapper_pg_dir``) becomes
   read-only in the image mapping too.

With ``arch="x86"`` the same steps run on :class:`kpsim.arch.x86.arch.X86`: the first
1 MiB is reserved too; ``paging_init`` builds the image's static tables and the direct
map (``init_mem_mapping``); the CPUs enable PKS (CR4.PKS, IA32_PKRS); ``mem_init``
ends with ``preallocate_vmalloc_pages``; after ``mark_rodata_ro`` the system is
running (``direct_map_level2/3_splits`` count from then on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpsim.arch.arm64.arch import Arm64
from kpsim.arch.arm64.linear_map_stats import linear_map_mappings, linear_map_tables
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.arch.x86.arch import X86
from kpsim.arch.x86.direct_map_stats import direct_map_mappings, direct_map_table_counts
from kpsim.errors import ConfigError, OutOfMemory
from kpsim.events import Counters
from kpsim.hw.arm64.system import Arm64System
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86.system import X86System
from kpsim.kpkeys.grouped import GroupedPages
from kpsim.kpkeys.hardened_pgtables import HardenedPgtables
from kpsim.kpkeys.pba import PkeysBlockAllocator
from kpsim.kpkeys.ppa import PhysmemAllocator
from kpsim.kpkeys.reserve import SplitReserve
from kpsim.kpkeys.timeline import Timeline
from kpsim.machine.config import MachineConfig
from kpsim.mm.fault_inject import FaultInjection
from kpsim.mm.kernel import Kernel
from kpsim.mm.memblock import Memblock
from kpsim.mm.page_alloc import PageAllocator
from kpsim.mm.pgtable import PgtableAllocator
from kpsim.units import format_size


def make_allocator(
    name: str, k: Kernel, arch: Arm64 | X86, ppa: PhysmemAllocator | None
) -> HardenedPgtables:
    """The kpkeys table allocator named by the configuration."""
    classes: dict[str, type[HardenedPgtables]] = {
        "minimal": HardenedPgtables,
        "pba": PkeysBlockAllocator,
        "grouped": GroupedPages,
        "reserve": SplitReserve,
    }
    return classes[name](k, arch, ppa)


#: the counters issue 5 names (``por_write`` for its "por_writes": one name per event),
#: present in every ``Machine.counters`` (and --json output)
KPKEYS_COUNTERS = (
    "pgtable_alloc",
    "pgtable_free",
    "set_memory_pkey",
    "por_write",
    "isb",
    "kpkeys_guard_entries",
    "kpkeys_enter_skipped",
    "lazy_mmu_sections",
    "warnings",
)


class Machine:
    """A booted machine (build one with :func:`kpsim.boot` or :meth:`Machine.boot`).

    Attributes: ``config`` (the :class:`~kpsim.machine.config.MachineConfig`), ``mem``
    (simulated RAM: the page tables live there), ``hw`` (the system: ``hw.cpus[i]`` with
    ``load``/``store``/``try_store``, MMU and TLB), ``k`` (the kernel's mm state:
    ``k.page_alloc``, ``k.memblock``, ``k.pgtable``), ``arch`` (arm64: ``pgd_offset_k``,
    ``pud_offset``..., ``read_entry``, ``set_pud``..., ``set_memory_*``), ``kpkeys`` (the
    table allocator of kpkeys_hardened_pgtables, or None with the feature off),
    ``timeline`` (the linear map's composition over time) and :attr:`counters`.
    """

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.mem = PhysicalMemory(config.dram_base, config.memory)
        self.k = Kernel(self.mem, config)
        self.k.pgtable = PgtableAllocator(self.k)
        opts: dict[str, Any] = {
            "linear_map": config.linear_map,
            "hardened_pgtables_config": config.hardened_pgtables,
            "batching": config.batching,
            "series": config.series,
        }
        # Any: layer-6 code still reaches arm64-only attributes (POR_EL1, ESR faults);
        # the x86 machine has the same kernel-side names, not the same registers.
        self.hw: Any
        self.arch: Any
        if config.arch == "x86":
            self.hw = X86System(self.mem, config.cpus, pks=config.poe)
            self.arch = X86(self.k, self.hw, **opts)
            leaves, tables = direct_map_mappings, direct_map_table_counts
        else:
            self.hw = Arm64System(self.mem, config.cpus, poe=config.poe)
            self.arch = Arm64(self.k, self.hw, **opts)
            leaves, tables = linear_map_mappings, linear_map_tables
        self.ppa: PhysmemAllocator | None = None
        self.kpkeys: HardenedPgtables | None = None
        mem, arch = self.mem, self.arch
        self.timeline = Timeline(
            self.k,
            lambda: leaves(mem, arch.swapper_pg_dir),
            lambda: tables(mem, arch.swapper_pg_dir),
        )
        self.booted = False

    @classmethod
    def boot(
        cls,
        config: MachineConfig | None = None,
        *,
        rodata_ro: bool = True,
        progress: Callable[[int, int, str], None] | None = None,
        **kwargs: Any,
    ) -> Machine:
        """Build and boot a machine from ``config`` (or ``MachineConfig(**kwargs)``).

        ``rodata_ro=False`` stops before ``mark_rodata_ro``, where built-in KUnit tests
        run. ``progress(done, total, label)`` is called as each boot step starts and
        after each GiB of the linear map (``paging_init``: most of a large machine's
        boot); ``total`` is :data:`BOOT_STEPS`.
        A configuration the kernel would refuse raises
        :class:`~kpsim.errors.ConfigError`; too little memory, ``OutOfMemory``.
        """
        m = cls(config if config is not None else MachineConfig(**kwargs))
        m._boot(rodata_ro, progress or _no_progress)
        return m

    # -- boot steps ----------------------------------------------------------------------
    def _boot(self, rodata_ro: bool, progress: Callable[[int, int, str], None]) -> None:
        cfg = self.config
        problem = cfg.boot_problem()
        if problem is not None:
            raise ConfigError(problem)
        mb = Memblock()
        if isinstance(self.arch, X86):
            for base, size in self.arch.e820_ram(cfg.memory):
                mb.memblock_add(base, size)
            mb.memblock_reserve(0, 1 << 20)  # x86_reserve_low: the first 1 MiB
        else:
            mb.memblock_add(cfg.dram_base, cfg.memory)
        mb.memblock_reserve(self.arch.kimage_pa, KIMAGE_SIZE)
        self.k.memblock = mb
        early = self._early_allocator()
        label = f"boot: paging_init (linear map of {format_size(cfg.memory)})"
        progress(0, BOOT_STEPS, label)

        def mapped(done: int, total: int) -> None:  # map_mem: 0..90 by bytes mapped
            progress(done * 90 // max(total, 1), BOOT_STEPS, label)

        self.arch.paging_init(early, mapped)
        self.arch.secondary_start()
        progress(90, BOOT_STEPS, "boot: mem_init (buddy allocator, kpkeys init)")
        self.mem_init()
        progress(99, BOOT_STEPS, "boot: mark_rodata_ro")
        self.arch.mark_linear_text_alias_ro()  # smp_cpus_done(), before KUnit and init
        self.booted = True
        if rodata_ro:
            self.mark_rodata_ro()
        if isinstance(self.arch, X86):
            self.arch.system_running = True
        self.arm_fault_injection()
        progress(BOOT_STEPS, BOOT_STEPS, "boot: done")

    def arm_fault_injection(self) -> FaultInjection | None:
        """Arm the configured fault-injection sites (once boot is done; see
        :mod:`kpsim.mm.fault_inject`): each hook reads one attribute, None when off."""
        specs = self.config.fault_specs()
        if not specs:
            return None
        fi = FaultInjection(specs, self.config.seed)
        self.k.fault_inject = fi
        self.k.page_alloc.fail_page_alloc = fi.get("page_alloc")
        self.k.pgtable.fail = fi.get("pagetable_alloc")
        self.arch.fail_set_memory_pkey = fi.get("set_memory_pkey")
        self.arch.fail_split = fi.get("split")
        if isinstance(self.kpkeys, PkeysBlockAllocator):
            self.kpkeys.fail_refill = fi.get("pba_refill")
        return fi

    def _early_allocator(self) -> Any:
        cfg = self.config
        if cfg.hardened_pgtables and cfg.poe:  # kpkeys_hardened_pgtables_early_enabled()
            self.ppa = PhysmemAllocator(self.k)
            ppa = self.ppa

            def alloc_ppa(level: int) -> int:
                pa = ppa.kpkeys_physmem_pgtable_alloc()
                if not pa:
                    raise OutOfMemory("early page table (PPA)")
                self.arch._register_early(pa, level, "memblock")
                return pa

            return alloc_ppa

        def alloc_memblock(level: int) -> int:
            pa: int = self.k.memblock.memblock_phys_alloc(4096, 4096)
            if not pa:
                raise OutOfMemory("early page table (memblock)")
            self.mem.zero_frame(pa >> 12)
            self.arch._register_early(pa, level, "memblock")
            return pa

        return alloc_memblock

    def mem_init(self) -> None:
        """``mem_init``: buddy allocator on; then ``kpkeys_hardened_pgtables_init()``."""
        self.k.page_alloc = PageAllocator(self.mem, clear_page=self.arch.clear_page)
        self.k.page_alloc.pcp.nr_cpus = self.config.cpus  # zone_highsize(): the node's CPUs
        self.k.memblock.memblock_free_all(self.k.page_alloc)
        for pfn in self.k.pgtable.live:
            self.k.page_alloc.memmap.set_page_table(pfn)
        if self.config.hardened_pgtables:
            self.kpkeys = make_allocator(
                self.config.effective_allocator, self.k, self.arch, self.ppa
            )
            self.timeline.allocator = self.kpkeys
            if isinstance(self.kpkeys, PkeysBlockAllocator):
                self.kpkeys.sample_hook = self.timeline.sample
            self.kpkeys.kpkeys_hardened_pgtables_init()
            if isinstance(self.kpkeys, PkeysBlockAllocator):
                # v6: arch code calls this as soon as linear-map pkeys may change.
                self.kpkeys.kpkeys_hardened_pgtables_init_late()
        if isinstance(self.arch, X86):
            self.arch.preallocate_vmalloc_pages()

    def mark_rodata_ro(self) -> None:
        """``mark_rodata_ro`` (arch/arm64/mm/mmu.c): the image's rodata, which holds
        ``swapper_pg_dir``, becomes PAGE_KERNEL_RO; later ``set_swapper_pgd`` writes go
        through the fixmap."""
        self.arch.mark_rodata_ro()

    # -- views -------------------------------------------------------------------------------
    @property
    def counters(self) -> Counters:
        """Every counter of the machine (missing names read as zero)."""
        out = Counters(self.k.counters)
        for name, v in self.hw.hw_counters().items():
            out[name] += v
        if self.k.page_alloc is not None:
            for name, v in self.k.page_alloc.counters.items():
                out[f"page_alloc.{name}"] = v
            for name, v in self.k.page_alloc.pcp.counters.items():
                out[f"page_alloc.{name}"] = v
        for name in KPKEYS_COUNTERS:  # always present, even at zero
            out[name] += 0
        return Counters(out.snapshot())


#: The scale of boot's ``progress`` calls: the linear map's creation is 0 to 90 (by
#: bytes mapped: most of a large machine's boot), mem_init 90 to 99.
BOOT_STEPS = 100


def _no_progress(done: int, total: int, label: str) -> None:
    """The default ``progress`` callback: nothing."""


def boot(config: MachineConfig | None = None, **kwargs: Any) -> Machine:
    """Boot a machine: ``kpsim.boot(memory="1G", cpus=2, linear_map="block")``."""
    return Machine.boot(config, **kwargs)
