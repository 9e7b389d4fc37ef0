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

Contiguous-PTE vmalloc (``VM_ALLOW_HUGE_VMAP`` below 2 MiB): ``arch_vmap_pte_supported_shift``
(``CONT_PTE_SHIFT`` once the size reaches 64 KiB), ``arch_vmap_pte_range_map_size``
(``CONT_PTE_SIZE`` where the range, the address and the physical address allow it) and
``set_huge_pte_at`` on ``init_mm`` (``arch/arm64/mm/hugetlbpage.c``): ``num_contig_ptes``
gives 16 PAGE_SIZE entries, ``arch_make_huge_pte`` sets PTE_CONT, the "break" step
(``clear_flush``) only when the first old entry is valid, then ``__set_ptes_anysz``
writes the 16 entries one ``__set_pte_nosync`` at a time, each under its own
``kpkeys_hardened_pgtables`` guard (kpkeys v5 15/18 guards ``__set_pte_nosync``, not the
loop), so the 16 writes go through :meth:`pt_store_batch`, which counts one switch per
entry outside a batched lazy-MMU section and none inside, as Linux does.
Left out: ``arch_vmap_pud_supported`` (1 GiB vmalloc blocks).
"""

from __future__ import annotations

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.memory import KIMAGE_VADDR, VMALLOC_END, VMALLOC_START
from kpsim.arch.arm64.pgtable import PAGE_KERNEL, PgtableMixin, sect_prot
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.arch.arm64.tlbflush import TlbFlushMixin
from kpsim.errors import ModelInvariantError
from kpsim.hw.arm64 import descriptors as d

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
CONT_PTE_SHIFT = 16  # 4K granule: 16 entries
CONT_PTE_SIZE = 1 << CONT_PTE_SHIFT
CONT_PTES = CONT_PTE_SIZE >> PAGE_SHIFT
_CONT_ARANGE = np.arange(CONT_PTES, dtype=np.uint64)


@mypyc_attr(native_class=False)  # see Arm64Base
class VmallocArchMixin(PgtableMixin, TlbFlushMixin):
    kimage_pa: int  # set by Arm64.__init__ (the image's physical base)

    def vmalloc_range(self) -> tuple[int, int]:
        """``[VMALLOC_START, VMALLOC_END)``."""
        return VMALLOC_START, VMALLOC_END

    def vmalloc_early_areas(self) -> list[tuple[int, int]]:
        """Areas registered before vmalloc_init (``vm_area_add_early``): the kernel image."""
        return [(KIMAGE_VADDR, KIMAGE_VADDR + KIMAGE_SIZE)]

    def arch_vmap_pmd_supported(self) -> bool:
        return True

    def arch_vmap_pte_supported_shift(self, size: int) -> int:
        """``arch_vmap_pte_supported_shift``: ``CONT_PTE_SHIFT`` from 64 KiB up."""
        return CONT_PTE_SHIFT if size >= CONT_PTE_SIZE else PAGE_SHIFT

    def arch_vmap_pte_range_map_size(
        self, addr: int, end: int, pfn: int, max_page_shift: int
    ) -> int:
        """``arch_vmap_pte_range_map_size``: ``CONT_PTE_SIZE`` if at least 64 KiB remain,
        ``max_page_shift`` allows it and both ``addr`` and the physical address are
        64 KiB aligned; otherwise ``PAGE_SIZE``."""
        if end - addr < CONT_PTE_SIZE or max_page_shift < CONT_PTE_SHIFT:
            return PAGE_SIZE
        if addr & (CONT_PTE_SIZE - 1) or (pfn << PAGE_SHIFT) & (CONT_PTE_SIZE - 1):
            return PAGE_SIZE
        return CONT_PTE_SIZE

    def set_huge_pte_at_kernel(self, addr: int, table_pa: int, pfn: int, size: int) -> None:
        """``set_huge_pte_at(&init_mm, addr, ptep, arch_make_huge_pte(pfn_pte(pfn,
        PAGE_KERNEL), ilog2(size)), size)`` for a ``CONT_PTE_SIZE`` block at ``addr``,
        whose entries lie in the PTE table at ``table_pa``."""
        if size != CONT_PTE_SIZE or addr & (CONT_PTE_SIZE - 1):
            raise ModelInvariantError(f"set_huge_pte_at: {size:#x} block at {addr:#x}")
        index = (addr >> PAGE_SHIFT) & 0x1FF
        sl = slice(index, index + CONT_PTES)
        if int(self.read_table(table_pa)[index]) & d.VALID:  # valid -> valid: clear_flush
            self.pt_store_batch(table_pa, sl, 0)  # 16 x __ptep_get_and_clear_anysz
            self.flush_tlb_kernel_range(addr, addr + CONT_PTE_SIZE)
        vals = ((np.uint64(pfn) + _CONT_ARANGE) << np.uint64(PAGE_SHIFT)) | np.uint64(
            PAGE_KERNEL | d.CONT
        )
        self.pt_store_batch(table_pa, sl, vals)  # __set_ptes_anysz: 16 x __set_pte_nosync
        self.queue_pte_barriers()

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
