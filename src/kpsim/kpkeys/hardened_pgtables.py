"""kpkeys_hardened_pgtables: the seed's minimal allocator and the feature's init.

Models ``mm/kpkeys_hardened_pgtables.c`` as of v7 12/24 (kpsim's seed) and 11/24,
13/24 (spec §4.2-4.6):

- ``kpkeys_hardened_pgtables_init()`` from ``mem_init()``: nothing if kpkeys are not
  enabled; otherwise enable the static key, ``ppa_finalize()`` and
  ``arch_kpkeys_protect_static_pgtables()``.
- ``kpkeys_pgtable_alloc(gfp, order)``: buddy allocation, then one
  ``set_memory_pkey(..., 1 << order, KPKEYS_PKEY_PGTABLES)``; on failure WARN, free
  the pages and return nothing.
- ``kpkeys_pgtable_free(page, order)``: ``set_memory_pkey(..., KPKEYS_PKEY_DEFAULT)``
  (WARN on failure), then free unconditionally.

The seed assumes a PTE-mapped linear map. On a block-mapped one, keying a page may
split a block, whose new table page must itself be keyed: recursion. kpsim detects
that re-entry (the split lock is held), records a WARN and leaves the new table page
unprotected, which the audit then reports (only with ``allow_unsafe_split``).
"""

from __future__ import annotations

from kpsim.kpkeys.context import kpkeys_enabled
from kpsim.kpkeys.ppa import PhysmemAllocator
from kpsim.kpkeys.protocol import KpkeysArch
from kpsim.mm.gfp import Gfp
from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_DEFAULT, KPKEYS_PKEY_PGTABLES


class HardenedPgtables:
    """The minimal (seed) allocator, hooked into ``pagetable_alloc``/``pagetable_free``."""

    name = "minimal"

    def __init__(self, k: Kernel, arch: KpkeysArch, ppa: PhysmemAllocator | None) -> None:
        self.k = k
        self.arch = arch
        self.ppa = ppa
        self.unprotected: set[int] = set()

    # -- init --------------------------------------------------------------------------
    def kpkeys_hardened_pgtables_init(self) -> bool:
        """Enable the feature (static key on) if kpkeys are enabled; key early tables."""
        if not kpkeys_enabled(self.arch):
            return False
        self.arch.hardened_pgtables = True
        self.k.pgtable.kpkeys_alloc = self.kpkeys_pgtable_alloc
        self.k.pgtable.kpkeys_free = self.kpkeys_pgtable_free
        if self.ppa is not None:
            self.ppa.ppa_finalize(self.arch.set_memory_pkey, self.arch.phys_to_virt)
        self.arch_kpkeys_protect_static_pgtables()
        return True

    def arch_kpkeys_protect_static_pgtables(self) -> None:
        """Key the kernel image's static tables (not ``swapper_pg_dir``)."""
        for pa in self.arch.static_tables:
            self._set_pkey(pa >> 12, 1, KPKEYS_PKEY_PGTABLES, "arch_kpkeys_protect_static_pgtables")

    # -- the allocator ---------------------------------------------------------------------
    def _set_pkey(self, pfn: int, nr: int, pkey: int, where: str) -> int:
        ret = self.arch.set_memory_pkey(self.arch.page_to_virt(pfn), nr, pkey)
        if ret:
            self.k.warn(where, f"set_memory_pkey(pfn {pfn:#x}, {nr}, {pkey}) = {ret}")
        return ret

    def kpkeys_pgtable_alloc(self, gfp: Gfp, order: int) -> int | None:
        pfn: int | None = self.k.page_alloc.alloc_pages(gfp, order)
        if pfn is None:
            return None
        if self.arch.split_lock_depth:
            # Re-entered from a linear-map split: keying would recurse (see module doc).
            self.k.warn("kpkeys_pgtable_alloc", "recursive split: table page left unprotected")
            self.unprotected.update(range(pfn, pfn + (1 << order)))
            return pfn
        if self._set_pkey(pfn, 1 << order, KPKEYS_PKEY_PGTABLES, "kpkeys_pgtable_alloc"):
            self.k.page_alloc.free_pages(pfn, order)
            return None
        return pfn

    def kpkeys_pgtable_free(self, pfn: int, order: int) -> None:
        if pfn in self.unprotected:
            self.unprotected.difference_update(range(pfn, pfn + (1 << order)))
        else:
            self._set_pkey(pfn, 1 << order, KPKEYS_PKEY_DEFAULT, "kpkeys_pgtable_free")
        self.k.page_alloc.free_pages(pfn, order)
