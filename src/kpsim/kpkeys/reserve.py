"""Comparison policy: reserve enough keyed pages at boot to split the whole linear map
(PKS RFC v2 17/19 "direct map page tables"; spec §5.12, option 4).

The x86 series weighed four answers to the recursion problem and chose a separate
cache of page-table pages, reserved at boot and large enough to map the *entire*
direct map with 4 KiB pages: one page per 1 GiB (a PMD table per PUD block) plus one
per 2 MiB (a PTE table per PMD block), about 0.2 % of RAM. It is sound because the
direct map is only ever split, never merged, so the reserve can never run dry. Other
table allocations use the grouped-pages cache (:mod:`kpsim.kpkeys.grouped`).

In the model: the reserve is taken at ``mem_init`` in whole 2 MiB blocks (so keying
them splits at most a PUD), registered before the feature is on and keyed with one
``set_memory_pkey`` per block in ``kpkeys_hardened_pgtables_init_late()``; a request
with ``__GFP_PGTABLE_SPLIT`` (every linear-map split) takes a page from it. The
reserve's first keying splits using a page of the block being keyed, which that same
call then keys (the boot-time window the PBA's early region has too).
"""

from __future__ import annotations

from kpsim.kpkeys.context import kpkeys_guard
from kpsim.kpkeys.grouped import GroupedPages
from kpsim.kpkeys.pba import BLOCK_NR_PAGES, BLOCK_ORDER
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_PGTABLES
from kpsim.units import SZ_1G, SZ_2M


def reserve_pages_needed(memory: int) -> int:
    """One PMD table per 1 GiB and one PTE table per 2 MiB of linear map."""
    return -(-memory // SZ_1G) + -(-memory // SZ_2M)


class SplitReserve(GroupedPages):
    """Grouped pages plus a boot-time reserve sized to split every block."""

    name = "reserve"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.split_reserve: list[int] = []
        self.reserve_blocks: list[int] = []
        self.reserve_size = 0

    def pba_init(self) -> None:
        super().pba_init()
        need = reserve_pages_needed(self.k.mem.size)
        nblocks = -(-need // BLOCK_NR_PAGES)
        for _ in range(nblocks):
            pfn = self.k.page_alloc.alloc_pages(GFP_KERNEL, BLOCK_ORDER)
            if pfn is None:
                self.k.warn("pba_init", "could not reserve the split pages")
                break
            self.k.page_alloc.split_page(pfn, BLOCK_ORDER)
            self.reserve_blocks.append(pfn)
            self.split_reserve.extend(range(pfn, pfn + BLOCK_NR_PAGES))
        self.reserve_size = len(self.split_reserve)
        self._count("reserve_pages", self.reserve_size)
        self._sample("pba_init")

    def pba_init_late(self) -> None:
        """Key the reserve, last block first (its own PUD split takes from it)."""
        super().pba_init_late()
        for head in reversed(self.reserve_blocks):
            self._set_pkey(head, BLOCK_NR_PAGES, KPKEYS_PKEY_PGTABLES, "reserve_init_late")

    def pba_pgtable_alloc(self, gfp: Gfp) -> int | None:
        if not int(gfp) & Gfp.PGTABLE_SPLIT:
            return super().pba_pgtable_alloc(gfp)
        if not self.split_reserve:
            self.k.warn("pba_pgtable_alloc", "split reserve exhausted")
            self._count("split_reserve_empty")
            return None
        pfn = self.split_reserve.pop()
        self._count("split_alloc")
        if int(gfp) & Gfp.ZERO:
            with kpkeys_guard(self.arch, KPKEYS_CTX_PGTABLES):
                self.arch.cpu.store_table(self.arch.page_to_virt(pfn), slice(None), 0)
        return pfn

    def reserve_level(self) -> int:
        return len(self.split_reserve)

    def kpkeys_cached_pfns(self) -> set[int]:
        return super().kpkeys_cached_pfns() | set(self.split_reserve)
