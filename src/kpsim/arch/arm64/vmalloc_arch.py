"""arm64 hooks for generic vmalloc (``mm/vmalloc.c`` callers of ``asm/pgtable.h``).

Models what ``mm/vmalloc.c`` asks of arm64: the bounds of the vmalloc area
(``VMALLOC_START``/``VMALLOC_END``), the kernel image registered with
``vm_area_add_early`` (arm64 ``declare_vma``), ``pfn_pte(pfn, PAGE_KERNEL)`` vectorised,
``pmd_set_huge`` (``arch_vmap_pmd_supported``), and ``p?d_populate_kernel``: a table
descriptor with UXNTable, written through the guarded helper, except in
``swapper_pg_dir``, which arm64 writes with ``set_swapper_pgd`` (``set_pgd`` on an entry
``in_swapper_pgdir``): a plain store through the image's own mapping while rodata is
still writable (``rodata_is_rw``), through the fixmap once ``mark_rodata_ro`` has run
(modelled as a direct store, docs/fidelity.md). Never through the linear alias, which
``mark_linear_text_alias_ro`` made read-only.
Left out: ``arch_vmap_pud_supported`` (1 GiB vmalloc blocks), ``arch_vmap_pte_range_map_size``
(contiguous-PTE vmalloc mappings).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.arch.arm64.memory import KIMAGE_VADDR, VMALLOC_END, VMALLOC_START
from kpsim.arch.arm64.pgtable import PAGE_KERNEL, PgtableMixin, sect_prot
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.hw.arm64 import descriptors as d


class VmallocArchMixin(PgtableMixin):
    kimage_pa: int  # set by Arm64.__init__ (the image's physical base)

    def vmalloc_range(self) -> tuple[int, int]:
        """``[VMALLOC_START, VMALLOC_END)``."""
        return VMALLOC_START, VMALLOC_END

    def vmalloc_early_areas(self) -> list[tuple[int, int]]:
        """Areas registered before vmalloc_init (``vm_area_add_early``): the kernel image."""
        return [(KIMAGE_VADDR, KIMAGE_VADDR + KIMAGE_SIZE)]

    def num_online_cpus(self) -> int:
        return len(self.system.cpus)

    def arch_vmap_pmd_supported(self) -> bool:
        return True

    def mk_kernel_ptes(self, pfns: Any) -> Any:
        """``pfn_pte(pfn, PAGE_KERNEL)`` for an array of pfns."""
        arr = np.asarray(pfns, dtype=np.uint64)
        return (arr << np.uint64(12)) | np.uint64(PAGE_KERNEL)

    def mk_kernel_pmd_block(self, pfn: int) -> int:
        """``pmd_set_huge``'s value: a 2 MiB PAGE_KERNEL section mapping ``pfn``."""
        return (pfn << 12) | sect_prot(PAGE_KERNEL)

    def pxd_populate_kernel(self, ptr: int, level: int, table_pfn: int) -> None:
        """``p4d/pud/pmd_populate_kernel``: point the level-``level`` entry at a new table."""
        desc = d.table_desc(table_pfn << 12, uxn_table=True)
        if level == 0 and self.entry_pa(ptr) & ~0xFFF == self.swapper_pg_dir:
            self.set_swapper_pgd(self.entry_pa(ptr), desc)
            return
        self.pt_store(ptr, desc)

    def set_swapper_pgd(self, entry_pa: int, pgd: int) -> None:
        """``set_swapper_pgd``: a store through the image alias (``KIMAGE_VADDR``-based,
        the pointer ``init_mm.pgd`` gives) while ``rodata_is_rw``; afterwards through the
        fixmap, modelled as a direct store (the fixmap's tables are not modelled)."""
        self.k.counters["set_swapper_pgd"] += 1
        if not self.rodata_ro:
            self.cpu.store(KIMAGE_VADDR + (entry_pa - self.kimage_pa), pgd)
            return
        self.k.mem.write64(entry_pa, pgd)
