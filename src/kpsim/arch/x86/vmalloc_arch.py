"""x86 hooks for generic vmalloc (``mm/vmalloc.c`` callers of ``asm/pgtable.h``).

The bounds of the vmalloc area (``VMALLOC_START``/``VMALLOC_END``), no early areas
(the x86 kernel image is not in vmalloc space), ``pfn_pte(pfn, PAGE_KERNEL)``
vectorised, ``pmd_set_huge`` (``arch_vmap_pmd_supported``: x86 has PSE) and
``p?d_populate_kernel`` with ``_KERNPG_TABLE`` through the guarded helper.

``preallocate_vmalloc_pages`` (``arch/x86/mm/init_64.c``): x86-64 allocates every
vmalloc-range PUD table at boot so that the kernel half of the PGD never changes and
user PGDs copied from it stay in sync; kpsim does it right after the kpkeys allocator
is on (Linux does it in ``mem_init``, before the generic init would key it:
docs/fidelity.md). Left out: ``arch_vmap_pud_supported`` (1 GiB vmalloc leaves).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from kpsim.arch.x86.memory import VMALLOC_END, VMALLOC_START
from kpsim.arch.x86.pgtable import KERNPG_TABLE, PAGE_KERNEL, PgtableMixin, large_prot
from kpsim.arch.x86.tlbflush import TlbFlushMixin
from kpsim.errors import OutOfMemory
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL


@mypyc_attr(native_class=False)  # see ArchBase
class VmallocArchMixin(PgtableMixin, TlbFlushMixin):
    def vmalloc_range(self) -> tuple[int, int]:
        return VMALLOC_START, VMALLOC_END + 1

    def vmalloc_early_areas(self) -> list[tuple[int, int]]:
        return []

    def arch_vmap_pmd_supported(self) -> bool:
        return True

    def arch_vmap_pte_supported_shift(self, size: int) -> int:
        return 12

    def arch_vmap_pte_range_map_size(
        self, addr: int, end: int, pfn: int, max_page_shift: int
    ) -> int:
        return 1 << 12

    def mk_kernel_pmd_block(self, pfn: int) -> int:
        return (pfn << 12) | large_prot(PAGE_KERNEL)

    def pxd_populate_kernel(self, ptr: int, level: int, table_pfn: int) -> None:
        self.pt_store(ptr, (table_pfn << 12) | KERNPG_TABLE)

    def preallocate_vmalloc_pages(self) -> None:
        """One PUD table per PGD entry of ``[VMALLOC_START, VMALLOC_END]``."""
        for addr in range(VMALLOC_START, VMALLOC_END + 1, 1 << 39):
            ptr = self.pgd_offset_k(addr)
            if self.read_entry(ptr):
                continue
            pfn = self.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 1, "kernel")
            if pfn is None:
                raise OutOfMemory("preallocate_vmalloc_pages")
            self.pxd_populate_kernel(ptr, 0, pfn)
        self.k.counters["preallocate_vmalloc_pages"] += 1
