"""arm64 boot-time page tables: ``paging_init`` (kernel image, linear map, vmemmap).

Models ``arch/arm64/mm/mmu.c`` (``map_kernel``, ``map_mem``) and
``vmemmap_populate`` (PMD blocks for ``struct page`` with 4 KiB pages). The kernel
image's own mapping uses static tables inside the image (``swapper_pg_dir`` and the
``init_pg_dir`` pool); the linear map's and vmemmap's tables come from the early
allocator passed in (memblock, or kpkeys' PPA when the feature is early-enabled).

Physical layout chosen (docs/fidelity.md): the image sits at the DRAM base, 16 MiB
(text 8 MiB RX, rodata 4 MiB RO, data+bss 4 MiB RW), its static tables at the end
of bss; KASLR off.
"""

from __future__ import annotations

from collections.abc import Callable

from kpsim.arch.arm64.memory import KIMAGE_VADDR
from kpsim.arch.arm64.mmu import NO_BLOCK_MAPPINGS, EarlyAlloc
from kpsim.arch.arm64.pageattr import PageattrMixin
from kpsim.arch.arm64.pgtable import PAGE_KERNEL, PAGE_KERNEL_RO, PAGE_KERNEL_ROX
from kpsim.mm.pgtable import TableInfo
from kpsim.units import SZ_2M

KIMAGE_SIZE = 16 << 20
KIMAGE_SEGMENTS = (
    ("text", 8 << 20, PAGE_KERNEL_ROX),
    ("rodata", 4 << 20, PAGE_KERNEL_RO),
    ("data", 4 << 20, PAGE_KERNEL),
)
STATIC_POOL_PAGES = 1 + 1 + 1 + KIMAGE_SIZE // SZ_2M  # swapper + PUD + PMD + PTE tables


class SetupMixin(PageattrMixin):
    kimage_pa: int
    vmemmap_range: tuple[int, int, int]
    static_tables: list[int]

    def static_pool(self) -> Callable[[int], int]:
        """The ``init_pg_dir`` pool: static table pages at the end of the image's bss."""
        pool = iter(range(1, STATIC_POOL_PAGES))
        top = self.kimage_pa + KIMAGE_SIZE

        def alloc(level: int) -> int:
            pa = top - (next(pool) + 1) * 4096
            self._register_early(pa, level, "static")
            self.static_tables.append(pa)
            return pa

        return alloc

    def _register_early(self, pa: int, level: int, source: str) -> None:
        self.k.pgtable.live[pa >> 12] = TableInfo(level, "kernel", source)
        self.k.counters["PageTables"] += 1

    def paging_init(self, early_alloc: EarlyAlloc) -> None:
        """Build ``swapper_pg_dir``: kernel image, linear map, vmemmap."""
        self.swapper_pg_dir = self.kimage_pa + KIMAGE_SIZE - 4096
        self._register_early(self.swapper_pg_dir, 0, "static")
        self.map_kernel()
        self.map_mem(early_alloc)
        self.vmemmap_populate(early_alloc)
        for cpu in self.system.cpus:
            cpu.ttbr1 = self.swapper_pg_dir

    def map_kernel(self) -> None:
        """``map_kernel``: the image's segments at KIMAGE_VADDR from static tables."""
        alloc = self.static_pool()
        va, pa = KIMAGE_VADDR, self.kimage_pa
        for _name, size, prot in KIMAGE_SEGMENTS:
            self.create_pgd_mapping(
                self.swapper_pg_dir, pa, va, size, prot, alloc, NO_BLOCK_MAPPINGS
            )
            va += size
            pa += size

    def map_mem(self, early_alloc: EarlyAlloc) -> None:
        """``map_mem``: every memblock memory region into the linear map."""
        for base, size in self.k.memblock.memory_regions():
            self.create_pgd_mapping(
                self.swapper_pg_dir,
                base,
                self.layout.phys_to_virt(base),
                size,
                PAGE_KERNEL,
                early_alloc,
                self.linear_map_flags(),
            )

    def vmemmap_populate(self, early_alloc: EarlyAlloc) -> None:
        """Map ``struct page`` for all RAM with 2 MiB blocks backed by one memblock buffer
        (``sparse_buffer_init`` + ``vmemmap_populate_hugepages``)."""
        for base, size in self.k.memblock.memory_regions():
            start: int = self.layout.page_to_virt_struct(base >> 12) & ~(SZ_2M - 1)
            end: int = self.layout.page_to_virt_struct((base + size) >> 12)
            end = (end + SZ_2M - 1) & ~(SZ_2M - 1)
            buf = self.k.memblock.memblock_phys_alloc(end - start, SZ_2M)
            if not buf:
                raise MemoryError("vmemmap: no memory for struct pages")
            self.create_pgd_mapping(
                self.swapper_pg_dir, buf, start, end - start, PAGE_KERNEL, early_alloc, 0
            )
            self.vmemmap_range = (start, end, buf)
