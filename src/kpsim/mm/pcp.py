"""The per-CPU page lists of ``mm/page_alloc.c`` (``struct per_cpu_pages``), kept as counts.

Linux serves allocations of orders up to ``PAGE_ALLOC_COSTLY_ORDER`` and of the PMD
order (``pcp_allowed_order``) from per-CPU lists: ``rmqueue_pcplist`` pops a page and,
when the list is empty, ``rmqueue_bulk`` first moves ``nr_pcp_alloc()`` blocks from the
buddy lists to it under ``zone->lock``; ``free_frozen_page_commit`` pushes a freed page
and, once ``pcp->count`` reaches ``nr_pcp_high()``, ``free_pcppages_bulk`` gives
``nr_pcp_free()`` blocks back to the buddy (``__free_one_page``, merging) under the
same lock. So a free followed by an allocation of the same order costs no buddy work,
while a run of frees with no allocations (munmap, or vfree of pages split from order-4
blocks) sends every page through ``__free_one_page``, and a run of allocations takes
every page from the buddy.

:class:`PerCpuPages` follows that policy by name (``zone_batchsize``,
``zone_highsize``, ``nr_pcp_alloc``, ``nr_pcp_high``, ``nr_pcp_free``, the
``alloc_factor``/``free_count`` tuning and the high-order ``free_high`` rule) for one
CPU and counts what it makes the buddy do: ``buddy_alloc`` blocks moved in by
``rmqueue_bulk``, ``buddy_free`` blocks given back (by ``free_pcppages_bulk``, or
straight from ``free_one_page`` for an order the lists do not take), with
``pcp_refill``/``pcp_drain`` for the lock round trips.

Left out (docs/fidelity.md, "Physical allocators"): the lists hold counts, not pages.
The allocator still takes and returns every page from and to its buddy lists at once
(the pfn an allocation gets is the buddy's, not the pcp list's LIFO head); only the
counts follow the pcp policy. One CPU's lists for every allocation (the model's
allocator has no current CPU), no migratetypes (one list per order), no
``decay_pcp_high`` (vmstat refresh), no ``ZONE_RECLAIM_ACTIVE``/``ZONE_BELOW_HIGH``
throttling, no ``drain_all_pages``.
"""

from __future__ import annotations

from math import isqrt
from typing import Final

from kpsim.events import Counters

#: ``PAGE_ALLOC_COSTLY_ORDER``
PAGE_ALLOC_COSTLY_ORDER: Final = 3
#: ``HPAGE_PMD_ORDER`` (4 KiB granule): the one order above COSTLY the lists take
PCP_PMD_ORDER: Final = 9
#: ``CONFIG_PCP_BATCH_SCALE_MAX`` (default)
PCP_BATCH_SCALE_MAX: Final = 5
#: ``MIN_PERCPU_PAGELIST_HIGH_FRACTION``: the fraction behind ``pcp->high_max``
MIN_PERCPU_PAGELIST_HIGH_FRACTION: Final = 8
#: ``watermark_scale_factor`` (default, in 1/10000 of the zone)
WATERMARK_SCALE_FACTOR: Final = 10
#: ``pcp->flags``
PCPF_PREV_FREE_HIGH_ORDER: Final = 1
PCPF_FREE_HIGH_BATCH: Final = 2
#: list index per order (``order_to_pindex``, migratetypes left out); -1: not a pcp order
_PINDEX: Final = tuple(
    o if o <= PAGE_ALLOC_COSTLY_ORDER else (PAGE_ALLOC_COSTLY_ORDER + 1 if o == PCP_PMD_ORDER
                                             else -1)
    for o in range(11)
)  # fmt: skip
_ORDER_OF: Final = (0, 1, 2, 3, PCP_PMD_ORDER)
NR_PCP_LISTS: Final = len(_ORDER_OF)


def pcp_allowed_order(order: int) -> bool:
    """``pcp_allowed_order()``: orders up to COSTLY, and the PMD order (THP)."""
    return 0 <= order < len(_PINDEX) and _PINDEX[order] >= 0


def zone_batchsize(managed_pages: int) -> int:
    """``zone_batchsize()``: about a quarter of 1/1024 of the zone, at most 1 MiB's
    worth, rounded to 2^n - 1."""
    batch = max(min(managed_pages >> 10, (1 << 20) >> 12) // 4, 1)
    batch += batch // 2
    # rounddown_pow_of_two(batch) - 1; zone_set_pageset_high_and_batch() keeps >= 1
    return max((1 << (batch.bit_length() - 1)) - 1, 1)


def low_wmark_pages(managed_pages: int) -> int:
    """The zone's low watermark (``calculate_min_free_kbytes`` and
    ``__setup_per_zone_wmarks`` for one zone): min = sqrt(16 * lowmem KiB) KiB, clamped
    to [128 KiB, 256 MiB]; low = min + max(min / 4, zone * watermark_scale_factor)."""
    kbytes = managed_pages * 4
    min_kbytes = min(max(isqrt(kbytes * 16), 128), 262144)
    wmin = min_kbytes >> 2
    return wmin + max(wmin >> 2, managed_pages * WATERMARK_SCALE_FACTOR // 10000)


def zone_highsize(managed_pages: int, batch: int, nr_cpus: int, high_fraction: int) -> int:
    """``zone_highsize()``: the low watermark (fraction 0) or 1/fraction of the zone,
    split over the node's CPUs, at least four batches."""
    total = low_wmark_pages(managed_pages) if not high_fraction else managed_pages // high_fraction
    high = total // max(nr_cpus, 1)
    return max(high, batch << 2)


class PerCpuPages:
    """``struct per_cpu_pages`` of one CPU for the one zone, its lists kept as counts."""

    __slots__ = (
        "_managed",
        "alloc_factor",
        "batch",
        "count",
        "counters",
        "flags",
        "free_count",
        "high",
        "high_max",
        "high_min",
        "lists",
        "nr_cpus",
    )

    def __init__(self, nr_cpus: int = 1) -> None:
        self.nr_cpus = nr_cpus
        self.counters = Counters()
        #: blocks on each list (``pcp->lists[pindex]``)
        self.lists = [0] * NR_PCP_LISTS
        self.count = 0  # pages on all lists
        self.high = self.high_min = self.high_max = 0
        self.batch = 1
        self.free_count = 0
        self.alloc_factor = 0
        self.flags = 0
        self._managed = -1

    def setup(self, managed_pages: int) -> None:
        """``zone_pcp_update()``: batch and high limits for the zone's managed pages."""
        if managed_pages == self._managed:
            return
        self._managed = managed_pages
        self.batch = zone_batchsize(managed_pages)
        self.high_min = zone_highsize(managed_pages, self.batch, self.nr_cpus, 0)
        self.high_max = zone_highsize(
            managed_pages, self.batch, self.nr_cpus, MIN_PERCPU_PAGELIST_HIGH_FRACTION
        )
        self.high_max = max(self.high_max, self.high_min)

    # -- allocation --------------------------------------------------------------
    def alloc(self, order: int, nr_free: int, *, bulk: bool = False) -> None:
        """``rmqueue_pcplist()`` (``bulk``: one page of ``alloc_pages_bulk``'s loop,
        which skips the per-call ``free_count`` decay) for a pcp order."""
        if not bulk:
            self.free_count >>= 1
        i = _PINDEX[order]
        if not self.lists[i]:
            want = self._nr_pcp_alloc(order)
            got = max(min(want, nr_free >> order), 1)
            self.lists[i] += got
            self.count += got << order
            c = self.counters
            c["pcp_refill"] += 1
            c["buddy_alloc"] += got
        self.lists[i] -= 1
        self.count -= 1 << order

    def _clamp_high(self) -> int:
        self.high = min(max(self.high, self.high_min), self.high_max)
        return self.high

    def _nr_pcp_alloc(self, order: int) -> int:
        """``nr_pcp_alloc()``: how many blocks ``rmqueue_bulk`` moves in."""
        high = self._clamp_high()
        base = self.batch
        if high < base:
            return 1
        batch = base if order else base << self.alloc_factor
        if self.high_min != self.high_max:
            high = self.high = min(high + batch, self.high_max)
        if not order:
            max_nr = max(high - self.count - base, base)
            if batch <= max_nr and self.alloc_factor < PCP_BATCH_SCALE_MAX:
                self.alloc_factor += 1
            batch = min(batch, max_nr)
        if batch > 1:
            batch = max(batch >> order, 2)
        return batch

    # -- freeing -----------------------------------------------------------------
    def free(self, order: int) -> None:
        """``__free_frozen_pages()``: a pcp order goes to its list
        (``free_frozen_page_commit``), any other straight to the buddy."""
        i = _PINDEX[order] if 0 <= order < len(_PINDEX) else -1
        if i < 0:
            self.counters["buddy_free"] += 1
            return
        self.alloc_factor >>= 1
        self.lists[i] += 1
        self.count += 1 << order
        batch = self.batch
        free_high = False
        if order and order <= PAGE_ALLOC_COSTLY_ORDER:
            free_high = (
                self.free_count >= batch + self.high_min // 2
                and bool(self.flags & PCPF_PREV_FREE_HIGH_ORDER)
                and (not self.flags & PCPF_FREE_HIGH_BATCH or self.count >= batch)
            )
            self.flags |= PCPF_PREV_FREE_HIGH_ORDER
        else:
            self.flags &= ~PCPF_PREV_FREE_HIGH_ORDER
        cap = batch << PCP_BATCH_SCALE_MAX
        if self.free_count < cap:
            self.free_count = min(self.free_count + (1 << order), cap)
        high = self._nr_pcp_high(free_high)
        if self.count >= high:
            self._free_pcppages_bulk(self._nr_pcp_free(batch, high, free_high), i)

    def free_order0(self, n: int) -> None:
        """:meth:`free` of ``n`` order-0 pages in a row (``free_pages_bulk``'s run of
        single pages), a stretch of frees between two drains at a time: the same lists,
        counts, ``free_count``, flags, ``high`` and drains as ``n`` calls. (Per page,
        ``alloc_factor`` halves and the high-order flag clears, both idempotent or
        composable; ``high`` is clamped to the same value each time; a drain comes at
        the first page that brings ``count`` to ``high``.)"""
        if n <= 0:
            return
        self.alloc_factor >>= min(n, 63)
        self.flags &= ~PCPF_PREV_FREE_HIGH_ORDER
        cap = self.batch << PCP_BATCH_SCALE_MAX
        while n > 0:
            high = self._nr_pcp_high(False)
            k = min(n, max(high - self.count, 1))  # pages until count reaches high
            self.lists[0] += k
            self.count += k
            if self.free_count < cap:
                self.free_count = min(self.free_count + k, cap)
            n -= k
            if self.count >= high:
                self._free_pcppages_bulk(self._nr_pcp_free(self.batch, high, False), 0)

    def _nr_pcp_high(self, free_high: bool) -> int:
        """``nr_pcp_high()`` without the reclaim and below-high throttles."""
        high = self._clamp_high()
        if not high:
            return 0
        if free_high:
            self.high = max(high - (self.batch << PCP_BATCH_SCALE_MAX), self.high_min)
            return 0
        return high

    def _nr_pcp_free(self, batch: int, high: int, free_high: bool) -> int:
        """``nr_pcp_free()``: pages to give back, growing with consecutive frees."""
        if free_high:
            return min(self.count, batch << PCP_BATCH_SCALE_MAX)
        if high < batch:
            return 1
        return min(max(self.free_count, batch), max(high - batch, batch))

    def _free_pcppages_bulk(self, count: int, pindex: int) -> None:
        """``free_pcppages_bulk()``: blocks back to the buddy, from the list freed to
        first, then round-robin over the others, until ``count`` pages are gone."""
        count = min(self.count, count)
        c = self.counters
        c["pcp_drain"] += 1
        i = pindex
        while count > 0:
            while not self.lists[i]:
                i = (i + 1) % NR_PCP_LISTS
            pages = 1 << _ORDER_OF[i]
            n = min(self.lists[i], max(1, -(-count // pages)))
            self.lists[i] -= n
            self.count -= n * pages
            count -= n * pages
            c["buddy_free"] += n
