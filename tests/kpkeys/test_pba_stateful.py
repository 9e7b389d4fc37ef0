"""Stateful property test of the PBA: allocation, free, refill, shrink, foreign splits and
memory exhaustion in random order, checked against a reference model after every step
and, inside every linear-map split, by the audit.

The reference model knows which pages the test holds and predicts, from the cache
size before each operation, whether the cache or a refill serves it; it checks that
the reserve is never taken by ordinary requests, that every cached and held page
carries pkey 1, that no page is lost (buddy free + cached + held + hogged + live
tables is constant), and that the audit is clean.
"""

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kpsim.audit.invariants import audit, linear_pkey
from kpsim.kpkeys.pba import BLOCK_NR_PAGES, PBA_NR_RESERVED_PAGES, PBA_UNSHRINKABLE_PAGES
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL, Gfp

HOG_ORDERS = (9, 4, 0)


class PbaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = boot(memory="256M", linear_map="block")
        self.p = self.m.kpkeys
        self.held: list[int] = []
        self.hog: list[tuple[int, int]] = []
        self.total = self._pages()
        self.splits = 0
        self.m.arch.split_observer = self._on_split

    def _on_split(self, level, child):
        """Inside the split path, right after the new table is installed."""
        self.splits += 1
        assert linear_pkey(self.m, child) == 1
        assert not audit(self.m, cached=self.held)

    # -- helpers -----------------------------------------------------------------------
    def _pages(self) -> int:
        pa = self.m.k.page_alloc
        hogged = sum(1 << o for _, o in self.hog)
        held = len(getattr(self, "held", []))
        return pa.nr_free_pages() + self.p.nr_cached + held + hogged + len(self.m.k.pgtable.live)

    def _alloc(self, gfp):
        return self.p.kpkeys_pgtable_alloc(gfp, 0)

    # -- rules -----------------------------------------------------------------------------
    @rule(n=st.integers(1, 40))
    def alloc(self, n):
        for _ in range(n):
            before = self.p.nr_cached
            refills = self.m.counters["pba.refill"]
            pfn = self._alloc(GFP_PGTABLE_KERNEL)
            if before > PBA_NR_RESERVED_PAGES:
                assert pfn is not None and self.m.counters["pba.refill"] == refills
            elif pfn is None:  # a refill was needed and failed: nothing changed
                assert self.p.nr_cached == before
            else:
                assert self.m.counters["pba.refill"] == refills + 1
            if pfn is not None:
                assert pfn not in self.held and pfn not in self.p.cache
                self.held.append(pfn)

    @precondition(lambda self: self.p.kpkeys_ready_for_direct_map_split())
    @rule(n=st.integers(1, 2))
    def alloc_split(self, n):
        """A split that followed the protocol (ready) takes at most one group."""
        for _ in range(n):
            before = self.p.nr_cached
            pfn = self._alloc(GFP_PGTABLE_KERNEL | Gfp.PGTABLE_SPLIT)
            assert pfn is not None and self.p.nr_cached == before - 1
            self.held.append(pfn)

    @rule()
    def prepare(self):
        ret = self.p.kpkeys_prepare_direct_map_split()
        assert ret in (0, -12)
        if not ret:
            assert self.p.kpkeys_ready_for_direct_map_split()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), n=st.integers(1, 60))
    def free(self, data, n):
        for _ in range(min(n, len(self.held))):
            i = data.draw(st.integers(0, len(self.held) - 1))
            pfn = self.held.pop(i)
            self.p.kpkeys_pgtable_free(pfn, 0)
            assert pfn in self.p.cache

    @rule()
    def refill(self):
        got = self.p.refill_pages(alloc_one=False)
        if got is not None:  # the whole range is cached and keyed (the buddy may have
            # reclaimed other cached pages to satisfy it: v6's refill uses GFP_KERNEL)
            assert got in self.p.cache and linear_pkey(self.m, got) == 1

    @rule(nr=st.sampled_from([1, 32, 128, 512, 2048]))
    def shrink(self, nr):
        before = self.p.nr_cached
        freed = self.p.pba_shrink_scan(nr)
        if freed:
            # The release may have split a block, taking one page of the cache for it.
            assert self.p.nr_cached >= min(before, PBA_UNSHRINKABLE_PAGES) - 1
        assert freed <= max(nr, BLOCK_NR_PAGES)

    @rule(offset=st.integers(0, BLOCK_NR_PAGES - 1), ro=st.booleans())
    def foreign_split(self, offset, ro):
        head = self.m.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.NOWARN, 9)
        if head is None:
            return
        pfn = head + offset
        arch = self.m.arch
        if ro:
            ret = arch.set_memory_ro(arch.page_to_virt(pfn), 1)
            if not ret:
                assert arch.set_memory_rw(arch.page_to_virt(pfn), 1) == 0
        else:
            ret = arch.set_direct_map_invalid_noflush(pfn)
            if not ret:
                assert arch.set_direct_map_default_noflush(pfn) == 0
        if ret:  # only when no refill could replenish the reserve
            assert ret == -12 and self.m.counters["pba.refill_fail"]
        self.m.k.page_alloc.free_pages(head, 9)

    @precondition(lambda self: not self.hog)
    @rule()
    def exhaust_memory(self):
        """Take every free page; reclaim (the shrinker) runs when the buddy runs dry."""
        pa = self.m.k.page_alloc
        for order in HOG_ORDERS:
            while (pfn := pa.alloc_pages(GFP_KERNEL | Gfp.NOWARN, order)) is not None:
                self.hog.append((pfn, order))
        assert pa.nr_free_pages() == 0

    @precondition(lambda self: self.hog)
    @rule()
    def release_memory(self):
        for pfn, order in self.hog:
            self.m.k.page_alloc.free_pages(pfn, order)
        self.hog.clear()

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def no_page_lost(self):
        assert self._pages() == self.total

    @invariant()
    def cache_and_held_pages_are_keyed(self):
        m = self.m
        assert not set(self.held) & set(self.p.cache)
        for pfn in list(self.p.cache)[-8:] + self.held[-8:]:
            assert linear_pkey(m, pfn) == 1
            assert not m.k.page_alloc.is_free(pfn)

    @invariant()
    def block_counts_match_the_cache(self):
        per_block: dict[int, int] = {}
        for pfn in self.p.cache:
            head = pfn & ~(BLOCK_NR_PAGES - 1)
            if head in self.p.blocks:
                per_block[head] = per_block.get(head, 0) + 1
        for head, nr_free in self.p.blocks.items():
            assert per_block.get(head, 0) == nr_free

    @invariant()
    def audit_clean(self):
        assert not audit(self.m, cached=self.held)

    @invariant()
    def no_deadlock_warnings(self):
        assert not self.m.counters["pba.refill_reserve_low"]
        assert not self.p.alloc_mutex_held and not self.m.arch.split_lock_depth


PbaMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("PBA_EXAMPLES", "25")),  # e.g. 300 for a deep run
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPbaStateful = PbaMachine.TestCase
