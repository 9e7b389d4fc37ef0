"""The v6 "pkeys block allocator" (PBA) for block-mapped linear maps (spec §5).

Models ``mm/kpkeys_hardened_pgtables.c`` as of RFC v6 (15/30 "Handle splitting of
linear map", 17/30 the shrinker), by function:

- ``pba_init()``: with a PTE-only linear map (``arch_has_pte_only_direct_map()``) the
  PBA stays off and the **noblock** allocator (the seed's page-by-page behaviour) is
  used; otherwise ``pba_enabled_key`` is set and one initial refill is made before
  the feature is switched on. The linear map cannot be changed yet, so that range
  becomes the *early region* (``pba_early_region``), keyed later.
- ``pba_init_late()`` (from ``kpkeys_hardened_pgtables_init_late()``): set
  ``pba_can_set_pkey`` and key the whole early region in one ``set_memory_pkey``; then
  ``ppa_finalize()`` and ``arch_kpkeys_protect_static_pgtables()``.
- ``__refill_pages(alloc_one)``: buddy allocation of order 9, else 4, else 2
  (``GFP_KERNEL``, outside ``alloc_mutex``), then under ``alloc_mutex`` one
  ``set_memory_pkey`` for the whole range (its own splits take group 1 of the
  reserve through ``__GFP_PGTABLE_SPLIT``), ``split_page``, block marking (``in_block``
  and the head's ``block_nr_free``) for a PMD-order range, and the pages go to the
  head of ``cached_list`` (all but the first when ``alloc_one``).
- ``pba_pgtable_alloc(gfp)``: order 0 only; gfp checked (``GFP_KERNEL`` required;
  ``__GFP_ZERO``, ``__GFP_ACCOUNT``, ``__GFP_PGTABLE_SPLIT`` allowed); take the most
  recently cached page, but an ordinary request only while ``nr_cached >
  PBA_NR_RESERVED_PAGES``; otherwise refill with ``alloc_one``; ``__GFP_ZERO`` zeroes
  the (already keyed) page inside a ``KPKEYS_CTX_PGTABLES`` guard.
- ``pba_pgtable_free(page)``: back to the head of the cache (pages keep pkey 1); its
  block's ``block_nr_free`` is incremented.
- ``kpkeys_prepare_direct_map_split()`` / ``kpkeys_ready_for_direct_map_split()``: the
  protocol for every split that is not the refill's own (group 2); called by
  ``split_kernel_leaf_mapping`` (arch/arm64/mmu.py), which retries when not ready.
- the shrinker "kpkeys-pgtable-block" (``pba_shrink_count`` / ``pba_shrink_scan``),
  registered at ``late_initcall``, asked by the buddy allocator's direct reclaim
  (``shrink_slab``) and on demand (:meth:`PkeysBlockAllocator.shrink`).

Per-page metadata (``in_block`` in ``page->mapping``) is kept in Python: a block is
a naturally aligned 512-page range, so membership is "the aligned head is in
``blocks``". The locks are modelled by who holds them (one task runs at a time):
``alloc_mutex`` as a flag, so "the current task owns it" is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpsim.errors import ModelInvariantError
from kpsim.kpkeys.context import kpkeys_enabled, kpkeys_guard
from kpsim.kpkeys.hardened_pgtables import HardenedPgtables
from kpsim.kpkeys.ppa import PhysmemAllocator
from kpsim.kpkeys.protocol import KpkeysArch
from kpsim.mm.fault_inject import FaultAttr
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_DEFAULT, KPKEYS_PKEY_PGTABLES

ENOMEM = -12
PBA_NR_RESERVED_PAGES = 4
BLOCK_ORDER = 9  # PMD_ORDER with 4 KiB pages
BLOCK_NR_PAGES = 1 << BLOCK_ORDER
REFILL_ORDERS = (BLOCK_ORDER, 4, 2)
PBA_UNSHRINKABLE_PAGES = 16
PBA_SHRINK_BLOCK_MIN_PAGES = BLOCK_NR_PAGES // 8
PBA_GFP_ALLOC = int(GFP_KERNEL)
PBA_GFP_OPT = int(Gfp.ZERO | Gfp.ACCOUNT | Gfp.PGTABLE_SPLIT | Gfp.COMP)

SampleHook = Callable[[str], object]


class PkeysBlockAllocator(HardenedPgtables):
    """The v6 PBA; with a PTE-only linear map it is the noblock (seed) allocator."""

    name = "pba"
    #: ``fail_pba_refill`` (:mod:`kpsim.mm.fault_inject`); None: injection off
    fail_refill: FaultAttr | None = None

    def __init__(self, k: Kernel, arch: KpkeysArch, ppa: PhysmemAllocator | None) -> None:
        super().__init__(k, arch, ppa)
        self.enabled = False  # pba_enabled_key
        self.can_set_pkey = False  # pba_can_set_pkey
        self.cache: dict[int, None] = {}  # cached_list, insertion order; head = last
        self.blocks: dict[int, int] = {}  # block head pfn -> block_nr_free
        self.early_region: tuple[int, int] | None = None  # (pfn, order)
        self.untracked: list[tuple[int, int]] = []  # extra early regions (unprotected)
        self.alloc_mutex_held = False  # by the (single) running task
        self.in_flight: set[int] = set()  # keyed pages the shrinker is releasing
        self.sample_hook: SampleHook | None = None
        self.shrinker_registered = False

    # -- counters ------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        self.k.counters[f"pba.{name}"] += n

    def _sample(self, event: str) -> None:
        if self.sample_hook is not None:
            self.sample_hook(event)

    @property
    def nr_cached(self) -> int:
        return len(self.cache)

    def reserve_level(self) -> int:
        """How many of the ``PBA_NR_RESERVED_PAGES`` reserve pages are present."""
        return min(len(self.cache), PBA_NR_RESERVED_PAGES)

    def kpkeys_cached_pfns(self) -> set[int]:
        """Keyed pages the allocator holds outside every tree (the audit's
        ``ProtectedCache``): the cache and pages the shrinker is releasing."""
        return set(self.cache) | self.in_flight

    # -- init (kpkeys_hardened_pgtables_init / _init_late) -------------------------------
    def kpkeys_hardened_pgtables_init(self) -> bool:
        """``kpkeys_hardened_pgtables_init()``: ``pba_init()``, then the static key."""
        if not kpkeys_enabled(self.arch):
            return False
        self.pba_init()
        self.arch.hardened_pgtables = True
        self.k.pgtable.kpkeys_alloc = self.kpkeys_pgtable_alloc
        self.k.pgtable.kpkeys_free = self.kpkeys_pgtable_free
        return True

    def kpkeys_hardened_pgtables_init_late(self) -> None:
        """``kpkeys_hardened_pgtables_init_late()``: early region, PPA, static tables."""
        if not self.arch.hardened_pgtables:
            return
        self.pba_init_late()
        if self.ppa is not None:
            self.ppa.ppa_finalize(self.arch.set_memory_pkey, self.arch.phys_to_virt)
        self.arch_kpkeys_protect_static_pgtables()
        self.pba_register_shrinker()
        self._sample("init_late")

    def pba_init(self) -> None:
        """Select PBA or noblock; the initial refill (group 1 before the feature is on)."""
        if self.arch.force_pte_mapping():  # arch_has_pte_only_direct_map()
            return
        self.enabled = True
        self.arch.kpkeys_split_hooks = self  # type: ignore[attr-defined]
        if self.refill_pages(alloc_one=False) is None:
            self.k.warn("pba_init", "initial refill failed")
        self._sample("pba_init")

    def pba_init_late(self) -> None:
        """``pba_init_late()``: allow keying, then key the early region in one call."""
        if not self.enabled:
            return
        self.can_set_pkey = True
        if self.early_region is not None:
            pfn, order = self.early_region
            self.early_region = None
            if self._set_pkey(pfn, 1 << order, KPKEYS_PKEY_PGTABLES, "pba_init_late"):
                self._count("early_region_unkeyed")

    def pba_register_shrinker(self) -> None:
        """``late_initcall``: register "kpkeys-pgtable-block" (only if the PBA is on)."""
        if self.enabled and not self.shrinker_registered:
            self.k.page_alloc.register_shrinker(self.pba_shrink_scan)
            self.shrinker_registered = True

    # -- the allocator entry points --------------------------------------------------------
    def kpkeys_pgtable_alloc(self, gfp: Gfp, order: int) -> int | None:
        if not self.enabled:
            return super().kpkeys_pgtable_alloc(gfp, order)  # noblock
        if order:
            self.k.warn("kpkeys_pgtable_alloc", f"order {order} not supported by the PBA")
            return None
        return self.pba_pgtable_alloc(gfp)

    def kpkeys_pgtable_free(self, pfn: int, order: int) -> None:
        if not self.enabled:
            super().kpkeys_pgtable_free(pfn, order)
            return
        self.pba_pgtable_free(pfn)

    def _check_gfp(self, gfp: int) -> None:
        if gfp & PBA_GFP_ALLOC != PBA_GFP_ALLOC:
            self.k.warn("pba_pgtable_alloc", f"Missing GFP_KERNEL bits in gfp {gfp:#x}")
        if gfp & ~(PBA_GFP_ALLOC | PBA_GFP_OPT):
            self.k.warn("pba_pgtable_alloc", f"Unexpected gfp {gfp:#x}")

    def pba_pgtable_alloc(self, gfp: Gfp) -> int | None:
        g = int(gfp)
        self._check_gfp(g)
        split = bool(g & Gfp.PGTABLE_SPLIT)
        pfn = self._take(split)
        if pfn is None:
            if split:
                # The reserve is empty: v6 would fall back to a refill, which re-enters
                # alloc_mutex (refill split) or the split lock (foreign split).
                what = "refill" if self.alloc_mutex_held else "split"
                self.k.warn("pba_pgtable_alloc", f"split reserve empty ({what}): self-deadlock")
                self._count("split_reserve_empty")
                return None
            pfn = self.refill_pages(alloc_one=True)
            if pfn is None:
                self.k.warn("pba_pgtable_alloc", "refill failed")
                self._count("alloc_fail")
                return None
        self._count("alloc")
        if g & Gfp.ZERO:
            self._count("clear_page")  # a cached page is zeroed in the pgtables context
            with kpkeys_guard(self.arch, KPKEYS_CTX_PGTABLES):
                self.arch.cpu.store_table(self.arch.page_to_virt(pfn), slice(None), 0)
        return pfn

    def _take(self, split: bool) -> int | None:
        """Take the head of the cache; ordinary requests leave the reserve alone."""
        n = len(self.cache)
        if n == 0 or (not split and n <= PBA_NR_RESERVED_PAGES):
            return None
        pfn, _ = self.cache.popitem()
        head = pfn & ~(BLOCK_NR_PAGES - 1)
        if head in self.blocks:
            self.blocks[head] -= 1
        if split:
            self._count("split_alloc")
            if n <= PBA_NR_RESERVED_PAGES:
                self._count("reserve_used")
        return pfn

    def pba_pgtable_free(self, pfn: int) -> None:
        if pfn in self.cache:
            raise ModelInvariantError(f"pba_pgtable_free({pfn:#x}): page already cached")
        self.cache[pfn] = None
        head = pfn & ~(BLOCK_NR_PAGES - 1)
        if head in self.blocks:
            self.blocks[head] += 1
        self._count("free")

    # -- refill ------------------------------------------------------------------------------
    def _refill_buddy(self) -> tuple[int, int] | None:
        for order in REFILL_ORDERS:
            pfn = self.k.page_alloc.alloc_pages(GFP_KERNEL, order)
            if pfn is not None:
                return pfn, order
        return None

    def refill_pages(self, alloc_one: bool) -> int | None:
        """``__refill_pages(alloc_one)``: the first page (``alloc_one``) or the range's pfn."""
        fail = self.fail_refill
        got = None if fail is not None and fail.should_fail(1) else self._refill_buddy()
        if got is None:
            self._count("refill_fail")
            return None
        pfn, order = got
        n = 1 << order
        pages = range(pfn, pfn + n)
        hook = getattr(self.arch, "explore_hook", None)  # kpsim explore's points
        self.alloc_mutex_held = True
        if hook is not None:
            hook("pba:refill")
        try:
            if self.can_set_pkey:
                if len(self.cache) < 2:
                    self.k.warn("__refill_pages", "fewer than 2 reserve pages for the refill split")
                    self._count("refill_reserve_low")
                if self._set_pkey(pfn, n, KPKEYS_PKEY_PGTABLES, "__refill_pages"):
                    self.k.page_alloc.free_pages(pfn, order)
                    self._count("refill_fail")
                    return None
            elif self.early_region is None:
                self.early_region = (pfn, order)
            else:
                self.k.warn("__refill_pages", "second early region: left unprotected")
                self.untracked.append((pfn, order))
            self.k.page_alloc.split_page(pfn, order)
            first = pfn if alloc_one else None
            cached = [p for p in pages if p != first]
            if order == BLOCK_ORDER:
                self.blocks[pfn] = len(cached)
            for p in cached:
                self.cache[p] = None
        finally:
            self.alloc_mutex_held = False
        if hook is not None:
            hook("pba:refilled")
        self._count("refill")
        self._count(f"refill_order_{order}")
        self._sample(f"refill_order_{order}")
        return pfn

    # -- the split protocol ------------------------------------------------------------------
    def kpkeys_prepare_direct_map_split(self) -> int:
        """Refill if the reserve needs replenishing; 0 or -ENOMEM. No lock required."""
        if not self.enabled or self.alloc_mutex_held:
            return 0
        if len(self.cache) >= PBA_NR_RESERVED_PAGES:
            return 0
        self._count("prepare_refill")
        return 0 if self.refill_pages(alloc_one=False) is not None else ENOMEM

    def kpkeys_ready_for_direct_map_split(self) -> bool:
        """Under the linear-map lock: enough reserve, or inside a refill (group 1)."""
        if not self.enabled:
            return True
        return len(self.cache) >= PBA_NR_RESERVED_PAGES or self.alloc_mutex_held

    # -- shrinker "kpkeys-pgtable-block" ------------------------------------------------------
    def pba_shrink_count(self) -> int:
        return max(0, len(self.cache) - PBA_UNSHRINKABLE_PAGES)

    def pba_shrink_scan(self, nr_to_scan: int) -> int:
        """``pba_shrink_scan``: free a whole free block, part of one, or non-block pages."""
        if not self.enabled or self.alloc_mutex_held:
            return 0
        shrinkable = self.pba_shrink_count()
        if not shrinkable:
            return 0
        nonblock = 0
        target: int | None = None
        target_free = 0
        whole: int | None = None
        blocks = self.blocks
        for pfn in reversed(self.cache):
            head = pfn & ~(BLOCK_NR_PAGES - 1)
            nr_free = blocks.get(head)
            if nr_free is None:
                nonblock += 1
                continue
            if nr_free == BLOCK_NR_PAGES:
                whole = head
                break
            if nr_free > target_free:
                target, target_free = head, nr_free
        if whole is not None:
            if shrinkable < BLOCK_NR_PAGES:
                return 0
            return self._release_block(whole)
        if (
            target is not None
            and target_free > nonblock
            and nonblock < nr_to_scan
            and target_free >= PBA_SHRINK_BLOCK_MIN_PAGES
        ):
            limit = min(nr_to_scan, target_free, shrinkable)
            chosen = self._pick(lambda p: p & ~(BLOCK_NR_PAGES - 1) == target, limit)
            del blocks[target]  # metadata cleared on all 512 pages
            self._count("shrink_partial_block")
        else:
            limit = min(nr_to_scan, nonblock, shrinkable)
            chosen = self._pick(lambda p: p & ~(BLOCK_NR_PAGES - 1) not in blocks, limit)
        return self._release_pages(chosen)

    def _pick(self, want: Callable[[int], bool], limit: int) -> list[int]:
        out: list[int] = []
        for pfn in reversed(self.cache):
            if len(out) >= limit:
                break
            if want(pfn):
                out.append(pfn)
        for pfn in out:
            del self.cache[pfn]
        return out

    def _release_block(self, head: int) -> int:
        pages = range(head, head + BLOCK_NR_PAGES)
        for p in pages:
            del self.cache[p]
        del self.blocks[head]
        self.in_flight.update(pages)
        try:
            if self._set_pkey(head, BLOCK_NR_PAGES, KPKEYS_PKEY_DEFAULT, "pba_shrink_scan"):
                for p in pages:
                    self.cache[p] = None
                self.blocks[head] = BLOCK_NR_PAGES
                return 0
            for p in pages:
                self.k.page_alloc.free_pages(p, 0)
        finally:
            self.in_flight.difference_update(pages)
        self._count("shrink_block")
        self._count("shrink_freed", BLOCK_NR_PAGES)
        self._sample("shrink_block")
        return BLOCK_NR_PAGES

    def _release_pages(self, chosen: list[int]) -> int:
        self.in_flight.update(chosen)
        freed = 0
        try:
            for i, p in enumerate(chosen):
                if self._set_pkey(p, 1, KPKEYS_PKEY_DEFAULT, "pba_shrink_scan"):
                    for q in chosen[i:]:
                        self.cache[q] = None
                    break
                self.in_flight.discard(p)
                self.k.page_alloc.free_pages(p, 0)
                freed += 1
        finally:
            self.in_flight.difference_update(chosen)
        if freed:
            self._count("shrink_pages", freed)
            self._count("shrink_freed", freed)
            self._sample("shrink_pages")
        return freed

    def shrink(self, nr_to_scan: int | None = None) -> int:
        """On demand (``drop_caches``-like): scan until nothing more is freed."""
        total = 0
        while True:
            want = nr_to_scan - total if nr_to_scan is not None else BLOCK_NR_PAGES
            if want <= 0:
                break
            freed = self.pba_shrink_scan(want)
            if not freed:
                break
            total += freed
        return total

    # -- views ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "allocator": self.name,
            "mode": "pba" if self.enabled else "noblock",
            "cached": len(self.cache),
            "reserve": self.reserve_level(),
            "blocks": len(self.blocks),
            "block_free_pages": sum(self.blocks.values()),
            "early_region_pending": self.early_region is not None,
        }
