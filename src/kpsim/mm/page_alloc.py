"""The buddy page allocator: ``mm/page_alloc.c`` for one zone.

Modelled as Linux does it, by name:

- free lists per order 0..``MAX_PAGE_ORDER`` (10); ``__rmqueue_smallest()`` takes
  the head of the smallest non-empty list and ``expand()`` puts the upper halves at
  the head of the lower lists, so an allocation returns the lowest part of a block;
- ``__free_one_page()`` merges with the buddy (``pfn ^ (1 << order)``) while the
  buddy is free at the same order, then adds the block at the head of its list, or
  at the tail when ``buddy_merge_likely()`` (the parent's buddy is free) or when the
  pages come from memblock (``FPI_TO_TAIL``, ``__free_pages_core()``);
- ``__free_pages_memory()`` hands memblock ranges over in naturally aligned chunks
  of at most order 10 (:meth:`PageAllocator.free_range`);
- ``prep_new_page()``: ``__GFP_ZERO`` clears every page through the injected
  ``clear_page`` callable, ``__GFP_COMP`` marks the head with its order;
- failure returns None and counts; with ``__GFP_DIRECT_RECLAIM`` the shrinkers are
  run once first (``shrink_slab()`` from direct reclaim) and the allocation retried;
  nested allocations made by a shrinker do not reclaim again (``PF_MEMALLOC``);
- ``free_pages_prepare()``: freeing a page whose metadata still says PageTable,
  anon, file, slab or has a mapping is a "Bad page state": a recorded warning, and
  the pages are leaked, as Linux leaks them;
- double frees, frees of reserved or never-allocated pages and order mismatches are
  ``BUG_ON``s (:class:`kpsim.errors.ModelInvariantError`).

Data layout, chosen for speed and for a sparse 1 TiB machine: the free lists are
doubly linked through two dicts (``_next``/``_prev``, one negative sentinel per
order) so that add-at-head, add-at-tail and unlink are O(1); ``_order`` plays
PageBuddy + ``buddy_order``; ``_alloc`` maps each allocated block's head to its
order. Untouched high memory is not expanded into 2^18 order-10 blocks: a run of
whole order-10 blocks handed over together is ONE node of the order-10 list
(``_runs``), carved from the front as order-10 blocks are taken, which preserves
Linux's list order exactly.

The per-CPU page lists' policy (``rmqueue_pcplist``/``free_frozen_page_commit``, the
refills and drains they make the buddy do) is followed as counts only
(:mod:`kpsim.mm.pcp`, ``self.pcp``); ``__free_pages_prepare``'s loop over the tail
pages of a freed block of order > 0 is counted ``free_tail``.

Left out (docs/fidelity.md): zones other than one, per-cpu page lists holding pages, migratetypes
and pageblocks, watermarks and kswapd, compaction, the OOM killer, page shuffling,
refcounts, memcg charging, init_on_alloc/init_on_free.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Final

from kpsim.errors import ModelInvariantError, OutOfMemory
from kpsim.events import Counters, WarnEvent
from kpsim.hw.physmem import PhysicalMemory
from kpsim.mm.fault_inject import FaultAttr
from kpsim.mm.gfp import Gfp
from kpsim.mm.page import PAGE_FLAGS_CHECK_AT_FREE, MemMap, PageFlags
from kpsim.mm.pcp import PerCpuPages, pcp_allowed_order
from kpsim.units import PAGE_SHIFT

MAX_PAGE_ORDER: Final = 10
NR_PAGE_ORDERS: Final = MAX_PAGE_ORDER + 1
MAX_ORDER_NR_PAGES: Final = 1 << MAX_PAGE_ORDER
#: ``SHRINK_BATCH``: what a shrinker is asked to scan per call (or 2^order if larger).
SHRINK_BATCH: Final = 128

Shrinker = Callable[[int], int]
ClearPage = Callable[[int], None]

_ZERO: Final = int(Gfp.ZERO)
_COMP: Final = int(Gfp.COMP)
_PREP: Final = _ZERO | _COMP
_DIRECT_RECLAIM: Final = int(Gfp.DIRECT_RECLAIM)
_NOWARN: Final = int(Gfp.NOWARN)
_NOFAIL: Final = int(Gfp.NOFAIL)
_BUDDY: Final = int(PageFlags.BUDDY)
_RESERVED: Final = int(PageFlags.RESERVED)
_HEAD: Final = int(PageFlags.HEAD)
_DERIVED: Final = _BUDDY | _RESERVED
_LIVE: Final = int(PAGE_FLAGS_CHECK_AT_FREE) | _HEAD
_RUN_MASK: Final = MAX_ORDER_NR_PAGES - 1

_ALLOC_KEYS: Final = tuple(f"alloc_order_{o}" for o in range(NR_PAGE_ORDERS))
_FREE_KEYS: Final = tuple(f"free_order_{o}" for o in range(NR_PAGE_ORDERS))
_FAIL_KEYS: Final = tuple(f"alloc_fail_order_{o}" for o in range(NR_PAGE_ORDERS))

Block = tuple[int, int, str]  # (start pfn, end pfn, what) for the audit


class PageAllocator:
    """One zone's buddy allocator over the pfns of ``mem`` (or ``[start_pfn, end_pfn)``).

    Every page starts out reserved (owned by memblock); :meth:`free_range` hands
    pages over, as ``memblock_free_all()`` does at ``mem_init()``.
    """

    __slots__ = (
        "_alloc",
        "_in_reclaim",
        "_leaked",
        "_managed_ends",
        "_managed_starts",
        "_next",
        "_order",
        "_prev",
        "_runs",
        "_shrinkers",
        "_warned_order",
        "clear_page",
        "counters",
        "end_pfn",
        "fail_page_alloc",
        "managed_pages",
        "mem",
        "memmap",
        "nr_free",
        "pcp",
        "start_pfn",
        "warnings",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        *,
        clear_page: ClearPage | None = None,
        memmap: MemMap | None = None,
        warnings: list[WarnEvent] | None = None,
    ) -> None:
        self.mem = mem
        self.start_pfn = mem.base >> PAGE_SHIFT
        self.end_pfn = mem.end >> PAGE_SHIFT
        #: ``clear_page(pfn)``, called once per page for ``__GFP_ZERO`` only.
        self.clear_page: ClearPage = clear_page if clear_page is not None else mem.zero_frame
        self.memmap = memmap if memmap is not None else MemMap(self.start_pfn, self.end_pfn)
        self.memmap.derive = self._derived_flags
        self.counters = Counters()
        #: the per-CPU lists' policy, as counts (:mod:`kpsim.mm.pcp`; its own counters)
        self.pcp = PerCpuPages()
        self.warnings: list[WarnEvent] = warnings if warnings is not None else []
        self.nr_free = 0
        self.managed_pages = 0
        sentinels = [-1 - o for o in range(NR_PAGE_ORDERS)]
        self._next: dict[int, int] = {s: s for s in sentinels}
        self._prev: dict[int, int] = {s: s for s in sentinels}
        self._order: dict[int, int] = {}
        self._runs: dict[int, int] = {}
        self._alloc: dict[int, int] = {}
        self._leaked: dict[int, int] = {}
        self._managed_starts: list[int] = []
        self._managed_ends: list[int] = []
        self._shrinkers: list[Shrinker] = []
        self._in_reclaim = False
        self._warned_order = False
        #: ``fail_page_alloc`` (:mod:`kpsim.mm.fault_inject`); None: injection off
        self.fail_page_alloc: FaultAttr | None = None

    # -- allocation -------------------------------------------------------------
    def alloc_pages(
        self, gfp: Gfp | int, order: int = 0, *, owner: str | None = None
    ) -> int | None:
        """``alloc_pages(gfp, order)``: the first pfn of 2^order pages, or None."""
        g = int(gfp)
        if not 0 <= order <= MAX_PAGE_ORDER:
            self._alloc_bad_order(g, order)
            return None
        fail = self.fail_page_alloc
        if fail is not None and fail.should_fail_alloc_page(g, order):
            self._alloc_injected(g, order)
            return None
        pfn = self._rmqueue(order)
        if pfn is None:
            pfn = self._alloc_slowpath(g, order)
            if pfn is None:
                return None
        self._alloc[pfn] = order
        c = self.counters
        c["alloc"] += 1
        c[_ALLOC_KEYS[order]] += 1
        if pcp_allowed_order(order):
            pcp = self.pcp
            pcp.setup(self.managed_pages)
            pcp.alloc(order, self.nr_free + (1 << order))
        if g & _PREP or owner is not None:
            self._prep_new_page(pfn, order, g, owner)
        return pfn

    def _rmqueue(self, order: int) -> int | None:
        """``__rmqueue_smallest()`` + ``expand()``: take from the smallest list that has a block."""
        nxt = self._next
        o = order
        while o <= MAX_PAGE_ORDER:
            pfn = nxt[-1 - o]
            if pfn >= 0:
                break
            o += 1
        else:
            return None
        if o == MAX_PAGE_ORDER and pfn in self._runs:
            self._carve_run(pfn)
        else:
            prv = self._prev
            n = nxt.pop(pfn)
            p = prv.pop(pfn)
            nxt[p] = n
            prv[n] = p
            del self._order[pfn]
        while o > order:  # expand(): upper halves to the head of each lower list
            o -= 1
            half = pfn + (1 << o)
            self._add_to_free_list(half, o, False)
        self.nr_free -= 1 << order
        return pfn

    def _carve_run(self, start: int) -> None:
        """Take the first order-10 block of the run node at ``start`` (in list position)."""
        end = self._runs.pop(start)
        nxt, prv = self._next, self._prev
        n = nxt.pop(start)
        p = prv.pop(start)
        rest = start + MAX_ORDER_NR_PAGES
        if rest == end:
            nxt[p] = n
            prv[n] = p
            return
        nxt[p] = rest
        prv[rest] = p
        nxt[rest] = n
        prv[n] = rest
        self._runs[rest] = end

    def _prep_new_page(self, pfn: int, order: int, g: int, owner: str | None) -> None:
        """``prep_new_page()``: zero (``__GFP_ZERO``), compound head, owner tag."""
        if g & _ZERO:
            clear = self.clear_page
            if order == 0:
                clear(pfn)
            else:
                for p in range(pfn, pfn + (1 << order)):
                    clear(p)
            self.counters["clear_page"] += 1 << order
        if owner is None and not (order and g & _COMP):
            return
        page = self.memmap.page(pfn)
        page.owner = owner
        if order and g & _COMP:
            page.flags |= _HEAD
            page.order = order

    def _alloc_slowpath(self, g: int, order: int) -> int | None:
        """``__alloc_pages_slowpath()`` reduced to: direct reclaim once, retry, fail."""
        if g & _DIRECT_RECLAIM and self._shrinkers and not self._in_reclaim:
            self._direct_reclaim(order)
            pfn = self._rmqueue(order)
            if pfn is not None:
                return pfn
        c = self.counters
        c["alloc_fail"] += 1
        c[_FAIL_KEYS[order]] += 1
        if g & _NOFAIL:
            raise OutOfMemory(f"__GFP_NOFAIL order-{order} allocation failed after reclaim")
        if not g & _NOWARN:
            c["alloc_fail_warn"] += 1  # warn_alloc(): "page allocation failure"
        return None

    def _alloc_injected(self, g: int, order: int) -> None:
        """A failure forced by ``should_fail_alloc_page()``: counted as a failure."""
        c = self.counters
        c["alloc_fail"] += 1
        c[_FAIL_KEYS[order]] += 1
        c["alloc_fail_injected"] += 1
        if not g & _NOWARN:
            c["alloc_fail_warn"] += 1

    def _alloc_bad_order(self, g: int, order: int) -> None:
        if order < 0:
            raise ModelInvariantError(f"negative allocation order {order}")
        if not g & _NOWARN and not self._warned_order:  # WARN_ON_ONCE_GFP()
            self._warned_order = True
            self.warnings.append(WarnEvent("__alloc_pages", f"order {order} > MAX_PAGE_ORDER"))
        self.counters["alloc_fail"] += 1

    # -- reclaim ------------------------------------------------------------------
    def register_shrinker(self, scan: Shrinker) -> Shrinker:
        """``shrinker_register()``: ``scan(nr_to_scan) -> pages freed``, run in order."""
        self._shrinkers.append(scan)
        return scan

    def unregister_shrinker(self, scan: Shrinker) -> None:
        self._shrinkers.remove(scan)

    def _direct_reclaim(self, order: int) -> int:
        """``shrink_slab()`` once over every shrinker; nested allocations do not reclaim."""
        nr_to_scan = max(SHRINK_BATCH, 1 << order)
        freed = 0
        self._in_reclaim = True
        try:
            for scan in list(self._shrinkers):
                freed += max(0, int(scan(nr_to_scan)))
        finally:
            self._in_reclaim = False
        self.counters["direct_reclaim"] += 1
        self.counters["shrinker_freed"] += freed
        return freed

    # -- freeing --------------------------------------------------------------------
    def free_pages(self, pfn: int, order: int = 0) -> None:
        """``__free_pages(page, order)``: give back a block exactly as allocated."""
        alloc = self._alloc
        if alloc.get(pfn, -1) != order:
            raise self._bad_free(pfn, order)
        del alloc[pfn]
        if self.memmap.pages and self._free_pages_prepare(pfn, order):
            return
        self._free_one_page(pfn, order, False)
        self.nr_free += 1 << order
        c = self.counters
        c["free"] += 1
        c[_FREE_KEYS[order]] += 1
        pcp = self.pcp
        pcp.setup(self.managed_pages)
        pcp.free(order)
        if order:  # __free_pages_prepare(): its loop over the tail pages
            c["free_tail"] += (1 << order) - 1

    def _free_pages_prepare(self, pfn: int, order: int) -> bool:
        """Check and reset the pages' metadata; True when the block is bad (leaked)."""
        pages = self.memmap.pages
        n = 1 << order
        if n == 1:
            found = [pfn] if pfn in pages else []
        elif n <= len(pages):
            found = [p for p in range(pfn, pfn + n) if p in pages]
        else:
            found = [p for p in pages if pfn <= p < pfn + n]
        for p in found:
            why = self.memmap.bad_at_free(p)
            if why is not None:
                self._bad_page(p, pfn, order, why)
                return True
        for p in found:
            del pages[p]
        return False

    def _bad_page(self, p: int, pfn: int, order: int, why: str) -> None:
        """``bad_page()``: report, taint, and leak the block (Linux does not free it)."""
        msg = f"Bad page state pfn:{p:#x} (order-{order} block at {pfn:#x}): {why}"
        self.warnings.append(WarnEvent("free_pages_prepare", msg))
        self.counters["bad_page"] += 1
        self._leaked[pfn] = order

    def _free_one_page(self, pfn: int, order: int, to_tail: bool) -> None:
        """``__free_one_page()``: merge with free buddies, then add head or tail."""
        od, nxt, prv = self._order, self._next, self._prev
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            if od.get(buddy) != order:  # page_is_buddy()
                break
            n = nxt.pop(buddy)
            p = prv.pop(buddy)
            nxt[p] = n
            prv[n] = p
            del od[buddy]
            pfn &= buddy
            order += 1
        if not to_tail and order < MAX_PAGE_ORDER - 1:  # buddy_merge_likely()
            higher = pfn & ~(1 << order)
            to_tail = od.get(higher ^ (1 << (order + 1))) == order + 1
        self._add_to_free_list(pfn, order, to_tail)

    def _add_to_free_list(self, pfn: int, order: int, to_tail: bool) -> None:
        """``__add_to_free_list()``: link ``pfn`` at the head (or tail) of ``order``'s list."""
        nxt, prv = self._next, self._prev
        s = -1 - order
        self._order[pfn] = order
        if to_tail:
            last = prv[s]
            prv[s] = pfn
            nxt[pfn] = s
            prv[pfn] = last
            nxt[last] = pfn
        else:
            first = nxt[s]
            nxt[s] = pfn
            prv[pfn] = s
            nxt[pfn] = first
            prv[first] = pfn

    def _bad_free(self, pfn: int, order: int) -> ModelInvariantError:
        """The BUG_ON for a free that does not match an allocation, with the reason."""
        what = f"free_pages(pfn={pfn:#x}, order={order})"
        if not 0 <= order <= MAX_PAGE_ORDER:
            return ModelInvariantError(f"{what}: order out of range")
        if not self.start_pfn <= pfn < self.end_pfn:
            return ModelInvariantError(f"{what}: pfn outside the zone")
        block = self.free_block_of(pfn)
        if block is not None:
            return ModelInvariantError(f"{what}: double free (page is in free block {block})")
        if pfn in self._alloc:
            return ModelInvariantError(f"{what}: allocated at order {self._alloc[pfn]}")
        if pfn in self._leaked:
            return ModelInvariantError(f"{what}: page was leaked by a bad page state")
        if not self.is_managed(pfn):
            return ModelInvariantError(f"{what}: freeing a reserved page")
        head = self.allocated_block_of(pfn)
        return ModelInvariantError(f"{what}: not the head of an allocation (inside {head})")

    def split_page(self, pfn: int, order: int) -> None:
        """``split_page()``: turn an allocated non-compound block into 2^order pages."""
        if self._alloc.get(pfn) != order:
            raise ModelInvariantError(f"split_page({pfn:#x}, {order}): not an order-{order} block")
        page = self.memmap.peek(pfn)
        if page is not None and page.flags & _HEAD:
            raise ModelInvariantError(f"split_page({pfn:#x}): compound page")
        owner = None if page is None else page.owner
        for p in range(pfn, pfn + (1 << order)):
            self._alloc[p] = 0
            if owner is not None:
                self.memmap.page(p).owner = owner

    # -- bulk order-0 paths (alloc_pages_bulk, free_pages_bulk) ---------------------------
    def plan_bulk(self, n: int) -> list[tuple[int, int, int]]:
        """The blocks ``n`` successive ``alloc_pages(gfp, 0)`` calls would be served
        from, without allocating: ``(order, pfn, pages taken)`` in order.

        With no reclaim, each call takes the head of the smallest non-empty list and
        ``expand()`` leaves only that block's upper parts on the lower lists (which
        were empty), so the calls take every order-0 block in list order, then every
        order-1 block, and so on, each block's pages in ascending order. Fewer than
        ``n`` pages when the free lists run dry (the next call would go slow path).
        """
        out: list[tuple[int, int, int]] = []
        nxt, runs = self._next, self._runs
        left = n
        for o in range(NR_PAGE_ORDERS):
            if left <= 0:
                break
            s = -1 - o
            pfn = nxt[s]
            while pfn >= 0 and left > 0:
                size = (runs[pfn] - pfn) if o == MAX_PAGE_ORDER and pfn in runs else 1 << o
                take = min(size, left)
                out.append((o, pfn, take))
                left -= take
                pfn = nxt[pfn]
        return out

    def alloc_pages_bulk(
        self,
        gfp: Gfp | int,
        plan: list[tuple[int, int, int]],
        clear_pages: Callable[[list[int]], None] | None = None,
        *,
        bulk_call: bool = False,
    ) -> list[int]:
        """``alloc_pages_bulk``: the order-0 pages of ``plan`` (from :meth:`plan_bulk`,
        with no allocator call in between), leaving the allocator, its counters and
        the pages exactly as the same number of ``alloc_pages(gfp, 0)`` calls would.
        ``clear_pages`` zeroes many pages as ``clear_page`` on each would.

        ``bulk_call``: the caller is Linux's own ``alloc_pages_bulk`` (one call, one
        pcp lock, a list pop per page: vmalloc's order-0 pages), counted as
        ``alloc_bulk_calls`` + ``alloc_bulk`` pages instead of ``alloc`` per page; the
        state left is the same either way."""
        g = int(gfp)
        pfns: list[int] = []
        for o, pfn, take in plan:
            self._take_block(o, pfn, take)
            pfns.extend(range(pfn, pfn + take))
        n = len(pfns)
        self._alloc.update(dict.fromkeys(pfns, 0))
        self.nr_free -= n
        c = self.counters
        if bulk_call:
            c["alloc_bulk_calls"] += 1
            c["alloc_bulk"] += n
        else:
            c["alloc"] += n
        c[_ALLOC_KEYS[0]] += n
        pcp = self.pcp
        pcp.setup(self.managed_pages)
        avail = self.nr_free + n
        for i in range(n):
            pcp.alloc(0, avail - i, bulk=bulk_call)
        if g & _ZERO and n:
            if clear_pages is not None:
                clear_pages(pfns)
            else:
                for p in pfns:
                    self.clear_page(p)
            c["clear_page"] += n
        return pfns

    def _take_block(self, o: int, pfn: int, take: int) -> None:
        """Remove the free block (or run) at ``pfn`` of order ``o`` after ``take`` of its
        pages went one at a time: the rest stays as ``expand()`` left it."""
        if o == MAX_PAGE_ORDER and pfn in self._runs:
            whole, part = divmod(take, MAX_ORDER_NR_PAGES)
            for _ in range(whole + (1 if part else 0)):
                self._carve_run(pfn)
                pfn += MAX_ORDER_NR_PAGES
            if not part:
                return
            pfn -= MAX_ORDER_NR_PAGES
            take = part
        else:
            nxt, prv = self._next, self._prev
            n = nxt.pop(pfn)
            p = prv.pop(pfn)
            nxt[p] = n
            prv[n] = p
            del self._order[pfn]
        off, end = take, 1 << o
        while off < end:  # the upper parts left on the (empty) lower lists
            j = (off & -off).bit_length() - 1
            self._add_to_free_list(pfn + off, j, False)
            off += 1 << j

    def free_pages_bulk(self, pfns: list[int]) -> None:
        """``free_pages(p, 0)`` for each of ``pfns`` (ascending, order-0 allocations).

        Freeing every page of an aligned block in ascending order leaves the lists as
        one free of the whole block would (the partial merges in between are unlinked
        again, and the last free makes the same merges and head/tail choice), so each
        maximal aligned block of consecutive pfns is freed at once.
        """
        alloc, meta = self._alloc, self.memmap.pages
        # an order-0 allocation with no stored metadata (looked at once per page: freeing
        # a page changes only its own entries, and the pfns are distinct and ascending)
        if meta:
            plain = [alloc.get(p, -1) == 0 and p not in meta for p in pfns]
        else:  # (the usual case: no page has metadata)
            plain = [alloc.get(p, -1) == 0 for p in pfns]
        i, n = 0, len(pfns)
        while i < n:
            pfn = pfns[i]
            if not plain[i] or pfn not in alloc:  # (not in alloc: listed twice)
                self.free_pages(pfn, 0)  # the one-by-one path checks and reports
                i += 1
                continue
            order = 0
            while order < MAX_PAGE_ORDER and not pfn & ((2 << order) - 1):
                size = 2 << order
                if i + size > n or pfns[i + size - 1] != pfn + size - 1:
                    break
                if not all(plain[i + (size >> 1) : i + size]):
                    break
                order += 1
            size = 1 << order
            for p in range(pfn, pfn + size):
                del alloc[p]
            self._free_one_page(pfn, order, False)
            self.nr_free += size
            c = self.counters
            c["free"] += size
            c[_FREE_KEYS[0]] += size
            pcp = self.pcp
            pcp.setup(self.managed_pages)
            pcp.free_order0(size)
            i += size

    def free_contig_range(self, pfn: int, nr_pages: int) -> None:
        """``free_contig_range()``: free ``nr_pages`` order-0 pages (e.g. after split_page)."""
        for p in range(pfn, pfn + nr_pages):
            self.free_pages(p, 0)

    # -- handing memory over (mem_init) --------------------------------------------------
    def free_range(self, start_pfn: int, end_pfn: int) -> int:
        """``__free_pages_memory()``: hand reserved pages over; returns how many."""
        if start_pfn >= end_pfn:
            return 0
        if start_pfn < self.start_pfn or end_pfn > self.end_pfn:
            raise ModelInvariantError(f"free_range [{start_pfn:#x}, {end_pfn:#x}) outside zone")
        self._add_managed(start_pfn, end_pfn)
        self._reset_memmap_range(start_pfn, end_pfn)
        pfn = start_pfn
        while pfn < end_pfn:
            order = (
                MAX_PAGE_ORDER if pfn == 0 else min(MAX_PAGE_ORDER, (pfn & -pfn).bit_length() - 1)
            )
            while pfn + (1 << order) > end_pfn:
                order -= 1
            if order == MAX_PAGE_ORDER:
                run_end = pfn + ((end_pfn - pfn) & ~_RUN_MASK)
                self._free_run(pfn, run_end)
                pfn = run_end
            else:
                self._free_one_page(pfn, order, True)  # FPI_TO_TAIL
                pfn += 1 << order
        n = end_pfn - start_pfn
        self.nr_free += n
        self.managed_pages += n
        self.counters["pages_handed_over"] += n
        return n

    def _free_run(self, start: int, end: int) -> None:
        """Append whole order-10 blocks ``[start, end)`` at the tail of the order-10 list."""
        s = -1 - MAX_PAGE_ORDER
        last = self._prev[s]
        if self._runs.get(last) == start:
            self._runs[last] = end
            return
        if last >= 0 and last not in self._runs and last + MAX_ORDER_NR_PAGES == start:
            del self._order[last]  # the tail block becomes the head of a run
            self._runs[last] = end
            return
        self._add_to_free_list(start, MAX_PAGE_ORDER, True)
        del self._order[start]
        self._runs[start] = end

    def _add_managed(self, start: int, end: int) -> None:
        starts, ends = self._managed_starts, self._managed_ends
        i = bisect_right(starts, start)
        if (i > 0 and ends[i - 1] > start) or (i < len(starts) and starts[i] < end):
            raise ModelInvariantError(f"pages [{start:#x}, {end:#x}) were already handed over")
        join_prev = i > 0 and ends[i - 1] == start
        join_next = i < len(starts) and starts[i] == end
        if join_prev and join_next:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif join_prev:
            ends[i - 1] = end
        elif join_next:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)

    def _reset_memmap_range(self, start: int, end: int) -> None:
        """Drop stale metadata of pages being handed over; live state there is a bad page."""
        pages = self.memmap.pages
        if not pages:
            return
        for p in [p for p in pages if start <= p < end]:
            why = self.memmap.bad_at_free(p)
            if why is not None:
                msg = f"Bad page state pfn:{p:#x} handed to the buddy allocator: {why}"
                self.warnings.append(WarnEvent("__free_pages_core", msg))
                self.counters["bad_page"] += 1
            del pages[p]

    # -- queries ------------------------------------------------------------------------
    def nr_free_pages(self) -> int:
        """``nr_free_pages()``: pages on the free lists."""
        return self.nr_free

    def is_managed(self, pfn: int) -> bool:
        """Was ``pfn`` handed to this allocator (``!PageReserved``)?"""
        i = bisect_right(self._managed_starts, pfn) - 1
        return i >= 0 and pfn < self._managed_ends[i]

    def _is_managed_range(self, start: int, end: int) -> bool:
        i = bisect_right(self._managed_starts, start) - 1
        return i >= 0 and end <= self._managed_ends[i]

    def free_block_of(self, pfn: int) -> tuple[int, int] | None:
        """``(head, order)`` of the free block containing ``pfn``, or None."""
        od = self._order
        for o in range(NR_PAGE_ORDERS):
            head = pfn & ~((1 << o) - 1)
            if od.get(head) == o:
                return head, o
        for start, end in self._runs.items():
            if start <= pfn < end:
                return pfn & ~_RUN_MASK, MAX_PAGE_ORDER
        return None

    def allocated_block_of(self, pfn: int) -> tuple[int, int] | None:
        """``(head, order)`` of the allocated block containing ``pfn``, or None."""
        alloc = self._alloc
        for o in range(NR_PAGE_ORDERS):
            head = pfn & ~((1 << o) - 1)
            if alloc.get(head) == o:
                return head, o
        return None

    def is_free(self, pfn: int) -> bool:
        """Is ``pfn`` inside a block on the free lists?"""
        return self.free_block_of(pfn) is not None

    def is_allocated(self, pfn: int) -> bool:
        """Is ``pfn`` inside a block handed out by :meth:`alloc_pages`?"""
        return self.allocated_block_of(pfn) is not None

    def page_order(self, pfn: int) -> int | None:
        """Order of the free or allocated block that starts at ``pfn``; None otherwise."""
        o = self._order.get(pfn)
        if o is None:
            o = self._alloc.get(pfn)
        if o is None and not pfn & _RUN_MASK and self._in_run(pfn):
            o = MAX_PAGE_ORDER
        return o

    def compound_order(self, pfn: int) -> int:
        """``compound_order()``: the order recorded on a compound head, else 0."""
        page = self.memmap.peek(pfn)
        return page.order if page is not None and page.flags & _HEAD else 0

    def page_flags(self, pfn: int) -> PageFlags:
        return self.memmap.page_flags(pfn)

    def _in_run(self, pfn: int) -> bool:
        return any(start <= pfn < end for start, end in self._runs.items())

    def _derived_flags(self, pfn: int) -> int:
        """PageBuddy on free-block heads, PageReserved on pages never handed over."""
        if pfn in self._order or (not pfn & _RUN_MASK and self._in_run(pfn)):
            return _BUDDY
        if self.is_managed(pfn):
            return 0
        return _RESERVED

    def free_list(self, order: int) -> list[int]:
        """Heads on ``order``'s free list, head first (runs expanded: O(blocks))."""
        out: list[int] = []
        s = -1 - order
        pfn = self._next[s]
        while pfn != s:
            end = self._runs.get(pfn) if order == MAX_PAGE_ORDER else None
            if end is None:
                out.append(pfn)
            else:
                out.extend(range(pfn, end, MAX_ORDER_NR_PAGES))
            pfn = self._next[pfn]
        return out

    def buddyinfo(self) -> list[int]:
        """Free blocks per order, as a line of ``/proc/buddyinfo``."""
        counts = [0] * NR_PAGE_ORDERS
        for o in self._order.values():
            counts[o] += 1
        for start, end in self._runs.items():
            counts[MAX_PAGE_ORDER] += (end - start) >> MAX_PAGE_ORDER
        return counts

    # -- audit ------------------------------------------------------------------------
    def audit(self) -> list[str]:
        """Cross-check free lists, allocations, accounting and page metadata."""
        problems: list[str] = []
        blocks = self._audit_free_lists(problems)
        self._audit_buddies(problems)
        blocks += [(p, p + (1 << o), "allocated") for p, o in self._alloc.items()]
        blocks += [(p, p + (1 << o), "leaked") for p, o in self._leaked.items()]
        self._audit_overlaps(blocks, problems)
        self._audit_counts(blocks, problems)
        self._audit_memmap(problems)
        return problems

    def _audit_free_lists(self, problems: list[str]) -> list[Block]:
        """Walk every list: links, orders, alignment, managed pages; return the blocks."""
        blocks: list[Block] = []
        nxt, prv = self._next, self._prev
        budget = len(nxt)
        for order in range(NR_PAGE_ORDERS):
            s = -1 - order
            pfn = nxt[s]
            prev = s
            while pfn != s and budget > 0:
                budget -= 1
                if prv.get(pfn) != prev:
                    problems.append(f"free list {order}: {pfn:#x} has a broken back link")
                end = self._runs.get(pfn) if order == MAX_PAGE_ORDER else None
                if end is None:
                    end = pfn + (1 << order)
                    if self._order.get(pfn) != order:
                        problems.append(
                            f"free list {order}: {pfn:#x} recorded as order {self._order.get(pfn)}"
                        )
                    if pfn & ((1 << order) - 1):
                        problems.append(f"free list {order}: {pfn:#x} is not aligned")
                elif pfn & _RUN_MASK or end & _RUN_MASK or end <= pfn:
                    problems.append(f"free run [{pfn:#x}, {end:#x}) is not made of order-10 blocks")
                if not self._is_managed_range(pfn, end):
                    problems.append(f"free block [{pfn:#x}, {end:#x}) holds reserved pages")
                blocks.append((pfn, end, "free"))
                prev, pfn = pfn, nxt.get(pfn, s)
        listed = len(blocks)
        if listed != len(self._order) + len(self._runs) or budget <= 0:
            problems.append(
                f"{listed} listed free blocks, {len(self._order) + len(self._runs)} recorded"
            )
        return blocks

    def _audit_buddies(self, problems: list[str]) -> None:
        od = self._order
        for pfn, o in od.items():
            buddy = pfn ^ (1 << o)
            if o < MAX_PAGE_ORDER and pfn < buddy and od.get(buddy) == o:
                problems.append(f"free buddies {pfn:#x} and {buddy:#x} of order {o} are unmerged")

    def _audit_overlaps(self, blocks: list[Block], problems: list[str]) -> None:
        last_end, last_what = self.start_pfn, "zone start"
        for start, end, what in sorted(blocks):
            if start < last_end:
                problems.append(f"{what} [{start:#x}, {end:#x}) overlaps a {last_what} block")
            if what != "free" and not self._is_managed_range(start, end):
                problems.append(f"{what} block [{start:#x}, {end:#x}) holds reserved pages")
            if end > last_end:
                last_end, last_what = end, what
        if last_end > self.end_pfn:
            problems.append(f"a block ends at {last_end:#x}, past the zone end {self.end_pfn:#x}")

    def _audit_counts(self, blocks: list[Block], problems: list[str]) -> None:
        pages = {"free": 0, "allocated": 0, "leaked": 0}
        for start, end, what in blocks:
            pages[what] += end - start
        managed = sum(e - s for s, e in zip(self._managed_starts, self._managed_ends, strict=True))
        if pages["free"] != self.nr_free:
            problems.append(f"nr_free is {self.nr_free} but the free lists hold {pages['free']}")
        if managed != self.managed_pages:
            problems.append(f"managed_pages is {self.managed_pages} but ranges hold {managed}")
        if sum(pages.values()) != managed:
            problems.append(f"managed {managed} != free + allocated + leaked {pages}")
        for pfn, o in self._leaked.items():
            problems.append(f"order-{o} block at {pfn:#x} leaked by a bad page state")

    def _audit_memmap(self, problems: list[str]) -> None:
        for pfn, page in self.memmap.pages.items():
            if page.flags & _DERIVED:
                problems.append(f"pfn {pfn:#x} stores a derived flag: {page!r}")
            if (page.flags & _LIVE or page.mapping) and self.is_free(pfn):
                problems.append(f"free pfn {pfn:#x} has live metadata: {page!r}")
            if page.flags & _HEAD and self._alloc.get(pfn, self._leaked.get(pfn)) != page.order:
                problems.append(f"compound head {pfn:#x} does not match its allocation: {page!r}")
