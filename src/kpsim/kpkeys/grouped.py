"""Comparison policy: the x86 "grouped pages" cache (PKS RFC v2 03/19; spec §5.12).

Rick Edgecombe's PKS page-table series kept a cache of free page-table pages that
already carry the protection key (``get_grouped_page()``/``free_grouped_page()``, a
``list_lru`` per node; kpsim has one node). On a miss it allocates a huge-page-order
block (2 MiB), keys it once, splits it, hands out one page and caches the rest; if no
block is available it falls back to order 0. Freed pages go back to the cache; a
shrinker resets the key of cached pages one by one and frees them.

There is **no reserve and no split protocol**: on a block-mapped linear map, keying a
refilled range may split the linear map, and the split's new table page is requested
while the cache is empty (a refill only happens on a miss). kpsim detects that
re-entry (the split lock is held) and, like the seed allocator, hands out a buddy
page that stays unprotected, with a WARN; the audit then reports the table. This is
where this design cannot keep the invariant, and the model shows it table by table
(``unprotected``). Booting it on a block map therefore needs ``allow_unsafe_split``.
"""

from __future__ import annotations

from kpsim.kpkeys.context import kpkeys_guard
from kpsim.kpkeys.pba import BLOCK_ORDER, PkeysBlockAllocator
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_PGTABLES

GROUPED_REFILL_ORDERS = (BLOCK_ORDER, 0)


class GroupedPages(PkeysBlockAllocator):
    """x86 PKS RFC v2 grouped pages: 2 MiB refills keyed once, no reserve."""

    name = "grouped"

    def pba_init(self) -> None:
        """The cache starts empty; there is no split protocol to register."""
        self.enabled = True

    def pba_init_late(self) -> None:
        self.can_set_pkey = True

    def kpkeys_prepare_direct_map_split(self) -> int:
        return 0

    def kpkeys_ready_for_direct_map_split(self) -> bool:
        return True

    def pba_pgtable_alloc(self, gfp: Gfp) -> int | None:
        """``get_grouped_page()``: from the cache, else a refill; zeroed in a guard."""
        pfn: int | None = None
        if self.cache:
            pfn, _ = self.cache.popitem()
        elif self.arch.split_lock_depth:
            pfn = self._recursive_split_page()
            if pfn is None:
                return None
            return pfn
        else:
            pfn = self.refill_pages(alloc_one=True)
            if pfn is None:
                self._count("alloc_fail")
                return None
        self._count("alloc")
        if int(gfp) & Gfp.ZERO:
            with kpkeys_guard(self.arch, KPKEYS_CTX_PGTABLES):
                self.arch.cpu.store_table(self.arch.page_to_virt(pfn), slice(None), 0)
        return pfn

    def _recursive_split_page(self) -> int | None:
        """A split of the cache's own refill needs a table now: nothing keyed is left."""
        pfn: int | None = self.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.ZERO, 0)
        if pfn is None:
            return None
        self.k.warn("get_grouped_page", "recursive split: table page left unprotected")
        self._count("unprotected")
        self.unprotected.add(pfn)
        return pfn

    def pba_pgtable_free(self, pfn: int) -> None:
        """``free_grouped_page()``: back to the cache (an unprotected page to the buddy)."""
        if pfn in self.unprotected:
            self.unprotected.discard(pfn)
            self.k.page_alloc.free_pages(pfn, 0)
            return
        super().pba_pgtable_free(pfn)

    def refill_pages(self, alloc_one: bool) -> int | None:
        """A 2 MiB block (else one page), keyed with one call, split, one page out."""
        pfn: int | None = None
        fail = self.fail_refill
        orders = () if fail is not None and fail.should_fail(1) else GROUPED_REFILL_ORDERS
        for order in orders:
            pfn = self.k.page_alloc.alloc_pages(GFP_KERNEL, order)
            if pfn is not None:
                break
        else:
            self._count("refill_fail")
            return None
        n = 1 << order
        if self._set_pkey(pfn, n, KPKEYS_PKEY_PGTABLES, "grouped_page_refill"):
            self.k.page_alloc.free_pages(pfn, order)
            self._count("refill_fail")
            return None
        self.k.page_alloc.split_page(pfn, order)
        for p in range(pfn, pfn + n):
            if not (alloc_one and p == pfn):
                self.cache[p] = None
        self._count("refill")
        self._count(f"refill_order_{order}")
        self._sample(f"refill_order_{order}")
        return pfn

    def pba_shrink_count(self) -> int:
        return len(self.cache)

    def pba_shrink_scan(self, nr_to_scan: int) -> int:
        """The list_lru shrinker: reset and free cached pages one by one."""
        if self.arch.split_lock_depth or not self.cache:
            return 0
        chosen = self._pick(lambda _p: True, min(nr_to_scan, len(self.cache)))
        return self._release_pages(chosen)
