"""The composition root: build and boot a simulated arm64 machine running Linux.

Boot follows arm64 Linux in order (``start_kernel`` -> ``setup_arch`` ->
``paging_init``; ``mm_core_init`` -> ``mem_init``):

1. memblock holds all RAM; the kernel image is reserved;
2. ``paging_init``: the image is mapped from static tables in ``swapper_pg_dir``; the
   linear map and the vmemmap are created with early tables from memblock (through
   kpkeys' PPA when the feature is early-enabled);
3. every CPU enables POE with ``POR_EL1_INIT`` and loads TTBR1;
4. ``mem_init``: memblock hands the remaining memory to the buddy allocator, then
   ``kpkeys_hardened_pgtables_init()`` switches the feature on;
5. optionally ``mark_rodata_ro``: ``swapper_pg_dir`` becomes read-only.
"""

from __future__ import annotations

from typing import Any

from kpsim.arch.arm64.arch import Arm64
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.errors import ConfigError, OutOfMemory
from kpsim.events import Counters
from kpsim.hw.arm64.system import Arm64System
from kpsim.hw.physmem import PhysicalMemory
from kpsim.kpkeys.hardened_pgtables import HardenedPgtables
from kpsim.kpkeys.ppa import PhysmemAllocator
from kpsim.machine.config import MachineConfig
from kpsim.mm.kernel import Kernel
from kpsim.mm.memblock import Memblock
from kpsim.mm.page_alloc import PageAllocator
from kpsim.mm.pgtable import PgtableAllocator


class Machine:
    """A booted machine: ``hw`` (system), ``k`` (kernel mm state), ``arch``, ``kpkeys``."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.mem = PhysicalMemory(config.dram_base, config.memory)
        self.hw = Arm64System(self.mem, config.cpus, poe=config.poe)
        self.k = Kernel(self.mem, config)
        self.k.pgtable = PgtableAllocator(self.k)
        self.arch = Arm64(
            self.k,
            self.hw,
            linear_map=config.linear_map,
            hardened_pgtables_config=config.hardened_pgtables,
            batching=config.batching,
        )
        self.ppa: PhysmemAllocator | None = None
        self.kpkeys: HardenedPgtables | None = None
        self.booted = False

    @classmethod
    def boot(
        cls, config: MachineConfig | None = None, *, rodata_ro: bool = True, **kwargs: Any
    ) -> Machine:
        m = cls(config if config is not None else MachineConfig(**kwargs))
        m._boot(rodata_ro)
        return m

    # -- boot steps ----------------------------------------------------------------------
    def _boot(self, rodata_ro: bool) -> None:
        cfg = self.config
        if (
            cfg.hardened_pgtables
            and cfg.poe
            and cfg.linear_map == "block"
            and cfg.effective_allocator == "minimal"
            and not cfg.allow_unsafe_split
        ):
            raise ConfigError(
                "the minimal allocator needs a PTE-mapped linear map: keying one page of a "
                "block mapping splits it, and the split's new table page must be keyed too "
                "(recursion); use --linear-map pte, or --allow-unsafe-split to see it happen"
            )
        mb = Memblock()
        mb.memblock_add(cfg.dram_base, cfg.memory)
        mb.memblock_reserve(self.arch.kimage_pa, KIMAGE_SIZE)
        self.k.memblock = mb
        early = self._early_allocator()
        self.arch.paging_init(early)
        self.arch.secondary_start()
        self.mem_init()
        self.booted = True
        if rodata_ro:
            self.mark_rodata_ro()

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
        self.k.memblock.memblock_free_all(self.k.page_alloc)
        for pfn in self.k.pgtable.live:
            self.k.page_alloc.memmap.set_page_table(pfn)
        if self.config.hardened_pgtables:
            self.kpkeys = HardenedPgtables(self.k, self.arch, self.ppa)
            self.kpkeys.kpkeys_hardened_pgtables_init()

    def mark_rodata_ro(self) -> None:
        """``mark_rodata_ro``: ``swapper_pg_dir`` read-only through its base permission."""
        self.arch.set_memory_ro(self.arch.phys_to_virt(self.arch.swapper_pg_dir), 1)
        self.arch.rodata_ro = True

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
        return Counters(out.snapshot())


def boot(config: MachineConfig | None = None, **kwargs: Any) -> Machine:
    """Boot a machine: ``kpsim.boot(memory="1G", cpus=2, linear_map="block")``."""
    return Machine.boot(config, **kwargs)
