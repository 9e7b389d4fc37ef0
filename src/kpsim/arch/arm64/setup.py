"""arm64 boot-time page tables: the kernel image, the linear map, the vmemmap.

Models ``arch/arm64/kernel/pi/map_kernel.c`` (``map_kernel``: the image mapped from
the static ``init_pg_dir`` pool, rodata read-write until ``mark_rodata_ro``, its root
then copied to ``swapper_pg_dir``), ``arch/arm64/mm/mmu.c`` (``map_mem`` with the
``memblock_mark_nomap`` trick, ``update_mapping_prot``, ``mark_linear_text_alias_ro``,
``mark_rodata_ro``) and ``vmemmap_populate`` (PMD blocks for ``struct page`` with
4 KiB pages). The linear map's and vmemmap's tables come from the early allocator
passed in (memblock, or kpkeys' PPA when the feature is early-enabled).

Image layout (``arch/arm64/kernel/vmlinux.lds.S``, sizes chosen by kpsim,
docs/fidelity.md): the image sits at the DRAM base, 16 MiB, KASLR off:

==========================  ==================  ====================================
[0, 8 MiB)                  ``_stext``          text, ROX
[8 MiB, 12 MiB)             ``__start_rodata``  RO_DATA; its last page is
                                                ``swapper_pg_dir`` (after idmap /
                                                reserved_pg_dir in Linux)
12 MiB                      ``__init_begin``    (no init sections in kpsim)
[12 MiB, 16 MiB)            ``_data``           data + bss, RW; the ``init_pg_dir``
                                                pool is the last pages, after bss
==========================  ==================  ====================================
"""

from __future__ import annotations

from collections.abc import Callable

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.memory import KIMAGE_VADDR
from kpsim.arch.arm64.mmu import NO_BLOCK_MAPPINGS, NO_CONT_MAPPINGS, EarlyAlloc
from kpsim.arch.arm64.pageattr import PageattrMixin
from kpsim.arch.arm64.pgtable import PAGE_KERNEL, PAGE_KERNEL_RO, PAGE_KERNEL_ROX, pgprot_tagged
from kpsim.mm.pgtable import TableInfo
from kpsim.units import SZ_1G, SZ_2M

KIMAGE_SIZE = 16 << 20
TEXT_SIZE = 8 << 20
RODATA_SIZE = 4 << 20
#: ``__start_rodata``, ``__init_begin`` and ``_data`` as offsets into the image
RODATA_OFFSET = TEXT_SIZE
INIT_BEGIN_OFFSET = TEXT_SIZE + RODATA_SIZE
DATA_OFFSET = INIT_BEGIN_OFFSET
#: ``swapper_pg_dir``: the last page of RO_DATA, just below ``__init_begin``
SWAPPER_OFFSET = INIT_BEGIN_OFFSET - 4096
#: (name, offset, size, boot prot, flags): rodata is PAGE_KERNEL at boot, without
#: contiguous hints so that ``mark_rodata_ro`` can remap it (pi/map_kernel.c).
KIMAGE_SEGMENTS = (
    ("text", 0, TEXT_SIZE, PAGE_KERNEL_ROX, NO_BLOCK_MAPPINGS),
    ("rodata", RODATA_OFFSET, RODATA_SIZE, PAGE_KERNEL, NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS),
    ("data", DATA_OFFSET, KIMAGE_SIZE - DATA_OFFSET, PAGE_KERNEL, NO_BLOCK_MAPPINGS),
)
STATIC_POOL_PAGES = 1 + 1 + KIMAGE_SIZE // SZ_2M  # the image's PUD + PMD + PTE tables


def _no_alloc(level: int) -> int:
    """``update_mapping_prot`` passes no allocator: a missing table is a bug."""
    raise AssertionError(f"update_mapping_prot needs a new level-{level} table")


class _StaticPool:
    """:meth:`SetupMixin.static_pool`'s allocator: the next static table page down from
    ``top`` (a class, not a closure: the compiled core cannot compile a closure in a
    method of a non-native class)."""

    def __init__(self, arch: SetupMixin, top: int) -> None:
        self.arch = arch
        self.top = top
        self.used = 0

    def __call__(self, level: int) -> int:
        if self.used >= STATIC_POOL_PAGES:
            raise StopIteration  # as next() on the exhausted pool did
        self.used += 1
        pa = self.top - self.used * 4096
        self.arch._register_early(pa, level, "static")
        self.arch.static_tables.append(pa)
        return pa


@mypyc_attr(native_class=False)  # see Arm64Base
class SetupMixin(PageattrMixin):
    kimage_pa: int
    vmemmap_range: tuple[int, int, int]
    static_tables: list[int]

    def kimage_va(self, pa: int) -> int:
        """The kernel image's own alias of an image physical address (``__va_symbol``)."""
        return KIMAGE_VADDR + (pa - self.kimage_pa)

    def static_pool(self) -> Callable[[int], int]:
        """The ``init_pg_dir`` pool: static table pages at the end of the image, after bss
        (``init_pg_dir``..``init_pg_end`` in vmlinux.lds.S)."""
        return _StaticPool(self, self.kimage_pa + KIMAGE_SIZE)

    def _register_early(self, pa: int, level: int, source: str) -> None:
        self.k.pgtable.live[pa >> 12] = TableInfo(level, "kernel", source)
        self.k.counters["PageTables"] += 1

    def paging_init(
        self, early_alloc: EarlyAlloc, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Build ``swapper_pg_dir``: kernel image, linear map, vmemmap.
        ``progress(done, total)``: bytes of memory mapped so far (see :meth:`map_mem`)."""
        self.swapper_pg_dir = self.kimage_pa + SWAPPER_OFFSET
        self._register_early(self.swapper_pg_dir, 0, "static")
        self.map_kernel()
        self.map_mem(early_alloc, progress)
        self.vmemmap_populate(early_alloc)
        for cpu in self.system.cpus:
            cpu.ttbr1 = self.swapper_pg_dir

    def map_kernel(self) -> None:
        """``map_kernel`` (pi/map_kernel.c): the image's segments at KIMAGE_VADDR from
        the static pool; rodata stays PAGE_KERNEL (writable) until ``mark_rodata_ro``.
        kpsim builds straight into ``swapper_pg_dir`` (Linux builds in ``init_pg_dir``
        and copies the root page there: the lower tables are the same pages)."""
        alloc = self.static_pool()
        for _name, off, size, prot, flags in KIMAGE_SEGMENTS:
            self.create_pgd_mapping(
                self.swapper_pg_dir,
                self.kimage_pa + off,
                KIMAGE_VADDR + off,
                size,
                prot,
                alloc,
                flags,
            )

    def map_mem(
        self, early_alloc: EarlyAlloc, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """``map_mem``: every memblock memory region into the linear map.

        Memory is mapped ``pgprot_tagged(PAGE_KERNEL)`` (MT_NORMAL_TAGGED, as Linux does
        whether or not the CPU has MTE). The linear alias of ``[_stext, __init_begin)``
        is left out of the first pass
        (``memblock_mark_nomap``), then mapped on its own PAGE_KERNEL with
        ``NO_CONT_MAPPINGS`` only (blocks allowed, whatever the policy), so that
        ``mark_linear_text_alias_ro`` can remap it without splitting a contiguous range.

        kpsim maps each range a GiB (one PUD entry) at a time, in address order: the
        tables and their allocation order are those of one call (every block and
        contiguous range lies inside one GiB), and ``progress(done, total)`` is told
        the bytes mapped after each GiB.
        """
        k_start = self.kimage_pa
        k_end = self.kimage_pa + INIT_BEGIN_OFFSET
        ranges = []
        for base, size in self.k.memblock.memory_regions():
            end = base + size
            for lo, hi in ((base, min(end, k_start)), (max(base, k_end), end)):
                if lo < hi:
                    ranges.append((lo, hi))
        total, done = sum(hi - lo for lo, hi in ranges), 0
        prot, flags = pgprot_tagged(PAGE_KERNEL), self.linear_map_flags()
        for lo, hi in ranges:
            while lo < hi:
                step = min(hi, (lo | (SZ_1G - 1)) + 1)
                self._map_memblock(lo, step, prot, flags, early_alloc)
                done += step - lo
                lo = step
                if progress is not None:
                    progress(done, total)
        self._map_memblock(k_start, k_end, PAGE_KERNEL, NO_CONT_MAPPINGS, early_alloc)

    def _map_memblock(
        self, start: int, end: int, prot: int, flags: int, early_alloc: EarlyAlloc
    ) -> None:
        """``__map_memblock``: ``[start, end)`` at its linear-map address."""
        self.create_pgd_mapping(
            self.swapper_pg_dir,
            start,
            self.layout.phys_to_virt(start),
            end - start,
            prot,
            early_alloc,
            flags,
        )

    def update_mapping_prot(
        self, phys: int, virt: int, size: int, prot: int, flags: int = NO_CONT_MAPPINGS
    ) -> None:
        """``update_mapping_prot``: rewrite live kernel mappings with ``prot`` (same
        structure, no allocation), then ``flush_tlb_kernel_range``. Linux goes through
        ``__create_pgd_mapping``, which writes via the fixmap: direct stores here."""
        self.create_pgd_mapping(self.swapper_pg_dir, phys, virt, size, prot, _no_alloc, flags)
        self.k.counters["update_mapping_prot"] += 1
        self.flush_tlb_kernel_range(virt, virt + size)

    def mark_linear_text_alias_ro(self) -> None:
        """``mark_linear_text_alias_ro`` (from ``smp_cpus_done``): the linear alias of
        ``[_stext, __init_begin)`` (text, rodata, hence ``swapper_pg_dir``) read-only."""
        self.update_mapping_prot(
            self.kimage_pa,
            self.layout.phys_to_virt(self.kimage_pa),
            INIT_BEGIN_OFFSET,
            PAGE_KERNEL_RO,
        )

    def mark_rodata_ro(self) -> None:
        """``mark_rodata_ro``: ``rodata_is_rw`` off, then the image's
        ``[__start_rodata, __init_begin)`` PAGE_KERNEL_RO. kpsim's image mapping is
        PTE-only, so the update keeps ``NO_BLOCK_MAPPINGS`` to rewrite the same leaves."""
        self.rodata_ro = True
        self.update_mapping_prot(
            self.kimage_pa + RODATA_OFFSET,
            KIMAGE_VADDR + RODATA_OFFSET,
            RODATA_SIZE,
            PAGE_KERNEL_RO,
            NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS,
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
