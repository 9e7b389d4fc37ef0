"""The buddy allocator (kpsim.mm.page_alloc) against Linux's rules and a reference model."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from kpsim.errors import ModelInvariantError, OutOfMemory
from kpsim.hw.physmem import PhysicalMemory
from kpsim.mm.gfp import (
    GFP_ATOMIC,
    GFP_KERNEL,
    GFP_NOFAIL,
    GFP_NOWARN,
    GFP_PGTABLE_KERNEL,
    GFP_PGTABLE_USER,
    Gfp,
    format_gfp,
)
from kpsim.mm.page import PageFlags
from kpsim.mm.page_alloc import MAX_ORDER_NR_PAGES, MAX_PAGE_ORDER, PageAllocator

BASE = 0x4000_0000
B = BASE >> 12  # first pfn of DRAM, order-10 aligned


def make(nblocks: int = 1, **kw) -> PageAllocator:
    """An allocator over ``nblocks`` order-10 blocks, all handed over."""
    mem = PhysicalMemory(BASE, nblocks * MAX_ORDER_NR_PAGES * 4096)
    pa = PageAllocator(mem, **kw)
    pa.free_range(B, B + nblocks * MAX_ORDER_NR_PAGES)
    return pa


def exhaust(pa: PageAllocator) -> list[int]:
    """Allocate every page as order 0, lowest first."""
    pfns = []
    while (p := pa.alloc_pages(GFP_KERNEL | GFP_NOWARN, 0)) is not None:
        pfns.append(p)
    return pfns


def test_gfp_masks_have_linux_values():
    """GFP composites carry the values Linux prints (GFP_KERNEL is 0xcc0)."""
    assert int(GFP_KERNEL) == 0xCC0 and int(GFP_ATOMIC) == 0x820
    assert GFP_PGTABLE_KERNEL == GFP_KERNEL | Gfp.ZERO
    assert GFP_PGTABLE_USER == GFP_PGTABLE_KERNEL | Gfp.ACCOUNT
    assert format_gfp(GFP_PGTABLE_USER) == "GFP_KERNEL|__GFP_ZERO|__GFP_ACCOUNT"


# -- Linux's list discipline ------------------------------------------------------------


def test_expand_returns_lowest_page_and_lists_upper_halves():
    """An order-0 allocation from an order-10 block returns its first page (expand)."""
    pa = make()
    assert pa.alloc_pages(GFP_KERNEL, 0) == B
    for o in range(MAX_PAGE_ORDER):
        assert pa.free_list(o) == [B + (1 << o)]
    assert pa.free_list(MAX_PAGE_ORDER) == []
    assert pa.audit() == []


def test_freed_page_is_reused_first_lifo():
    """The most recently freed page is the next one handed out (add at head)."""
    pa = make()
    pfns = [pa.alloc_pages(GFP_KERNEL, 0) for _ in range(4)]
    assert pfns == [B, B + 1, B + 2, B + 3]
    pa.free_pages(B + 3, 0)
    pa.free_pages(B + 1, 0)
    assert pa.free_list(0) == [B + 1, B + 3]
    assert pa.alloc_pages(GFP_KERNEL, 0) == B + 1


def test_buddy_merge_likely_puts_block_at_tail():
    """A block whose parent's buddy is free goes to the tail (buddy_merge_likely)."""
    pa = make()
    exhaust(pa)
    pa.free_pages(B + 8, 0)
    pa.free_pages(B + 0, 0)
    pa.free_pages(B + 1, 0)  # merges: (B, order 1) is free
    pa.free_pages(B + 2, 0)  # buddy B+3 busy, parent's buddy (B, order 1) free: tail
    assert pa.free_list(0) == [B + 8, B + 2]
    pa.free_pages(B + 16, 0)  # parent's buddy (B+18, order 1) busy: head
    assert pa.free_list(0) == [B + 16, B + 8, B + 2]
    assert pa.audit() == []


def test_free_range_adds_blocks_to_tail_in_address_order():
    """Memory handed over at mem_init is queued low to high and taken from the low end."""
    mem = PhysicalMemory(BASE, 4 * MAX_ORDER_NR_PAGES * 4096)
    pa = PageAllocator(mem)
    pa.free_range(B + 3 * MAX_ORDER_NR_PAGES, B + 4 * MAX_ORDER_NR_PAGES)
    pa.free_range(B, B + 3 * MAX_ORDER_NR_PAGES)
    heads = [B + 3072, B, B + 1024, B + 2048]
    assert pa.free_list(MAX_PAGE_ORDER) == heads
    assert [pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER) for _ in range(4)] == heads
    assert pa.alloc_pages(GFP_KERNEL | GFP_NOWARN, 0) is None


def test_free_range_splits_unaligned_edges_into_natural_chunks():
    """An unaligned range is handed over in naturally aligned chunks (__free_pages_memory)."""
    mem = PhysicalMemory(BASE, 2 * MAX_ORDER_NR_PAGES * 4096)
    pa = PageAllocator(mem)
    n = pa.free_range(B + 1, B + 1024 + 5)
    assert n == 1028
    assert pa.buddyinfo() == [2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 0]
    assert pa.audit() == []
    pa.free_range(B, B + 1)  # completes the first order-10 block
    assert pa.buddyinfo() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert pa.audit() == []


def test_handing_the_same_pages_over_twice_is_a_bug():
    """free_range over pages the allocator already owns raises ModelInvariantError."""
    pa = make()
    with pytest.raises(ModelInvariantError, match="already handed over"):
        pa.free_range(B + 5, B + 6)


# -- failure, reclaim -------------------------------------------------------------------


def test_failure_returns_none_and_counts():
    """An allocation that cannot be satisfied returns None and bumps alloc_fail."""
    pa = make()
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER) == B
    assert pa.alloc_pages(GFP_KERNEL, 0) is None
    assert pa.counters["alloc_fail"] == 1
    assert pa.counters["alloc_fail_order_0"] == 1
    assert pa.counters["alloc_fail_warn"] == 1
    assert pa.alloc_pages(GFP_KERNEL | GFP_NOWARN, 0) is None
    assert pa.counters["alloc_fail_warn"] == 1


def test_order_above_max_warns_once_and_fails():
    """Order 11 fails with one WARN_ON_ONCE, as __alloc_pages does."""
    pa = make()
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER + 1) is None
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER + 1) is None
    assert [w.function for w in pa.warnings] == ["__alloc_pages"]
    assert pa.nr_free_pages() == MAX_ORDER_NR_PAGES


def test_nofail_failure_raises_out_of_memory():
    """__GFP_NOFAIL cannot return None: the model raises OutOfMemory instead of looping."""
    pa = make()
    exhaust(pa)
    with pytest.raises(OutOfMemory):
        pa.alloc_pages(GFP_KERNEL | GFP_NOFAIL, 0)


def test_shrinker_runs_once_then_allocation_is_retried():
    """A failing GFP_KERNEL allocation calls each shrinker once and retries."""
    pa = make()
    held = exhaust(pa)
    calls: list[int] = []

    def shrink(nr_to_scan: int) -> int:
        calls.append(nr_to_scan)
        pa.free_pages(held.pop(), 0)
        return 1

    pa.register_shrinker(shrink)
    before = pa.counters.snapshot()
    got = pa.alloc_pages(GFP_KERNEL, 0)
    assert got is not None and len(calls) == 1 and calls[0] >= 1
    assert pa.counters.since(before) == {
        "alloc": 1,
        "alloc_order_0": 1,
        "direct_reclaim": 1,
        "free": 1,
        "free_order_0": 1,
        "shrinker_freed": 1,
    }


def test_shrinker_that_frees_nothing_leads_to_clean_failure():
    """When reclaim frees nothing the allocation fails with None after one reclaim pass."""
    pa = make()
    exhaust(pa)
    calls: list[int] = []
    pa.register_shrinker(lambda nr: calls.append(nr) or 0)
    before = pa.counters["alloc_fail"]
    assert pa.alloc_pages(GFP_KERNEL, 0) is None
    assert len(calls) == 1 and pa.counters["alloc_fail"] == before + 1
    assert pa.audit() == []


def test_atomic_allocation_does_not_reclaim():
    """GFP_ATOMIC lacks __GFP_DIRECT_RECLAIM: shrinkers are not called."""
    pa = make()
    exhaust(pa)
    calls: list[int] = []
    pa.register_shrinker(lambda nr: calls.append(nr) or 0)
    assert pa.alloc_pages(GFP_ATOMIC, 0) is None
    assert calls == []


def test_allocation_inside_a_shrinker_does_not_reclaim_again():
    """A shrinker's own allocation fails instead of recursing into reclaim (PF_MEMALLOC)."""
    pa = make()
    exhaust(pa)
    seen: list[int | None] = []
    pa.register_shrinker(lambda nr: seen.append(pa.alloc_pages(GFP_KERNEL, 0)) or 0)
    assert pa.alloc_pages(GFP_KERNEL, 0) is None
    assert seen == [None] and pa.counters["direct_reclaim"] == 1


# -- page preparation ---------------------------------------------------------------------


def test_clear_page_is_called_only_with_gfp_zero():
    """The injected clear_page runs once per page for __GFP_ZERO and never otherwise."""
    cleared: list[int] = []
    pa = make(clear_page=cleared.append)
    pa.alloc_pages(GFP_KERNEL, 2)
    pa.alloc_pages(GFP_ATOMIC, 0)
    assert cleared == []
    p = pa.alloc_pages(GFP_PGTABLE_KERNEL, 2)
    assert cleared == [p, p + 1, p + 2, p + 3]
    q = pa.alloc_pages(GFP_PGTABLE_USER, 0)
    assert cleared[-1] == q and len(cleared) == 5


def test_default_clear_page_zeroes_the_frame():
    """Without an injected clear_page, __GFP_ZERO zeroes the frame in physical memory."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 0)
    pa.mem.write64(p << 12, 0xDEAD)
    pa.free_pages(p, 0)
    assert pa.alloc_pages(GFP_KERNEL, 0) == p
    assert pa.mem.read64(p << 12) == 0xDEAD  # negative control: no __GFP_ZERO
    pa.free_pages(p, 0)
    assert pa.alloc_pages(GFP_KERNEL | Gfp.ZERO, 0) == p
    assert pa.mem.read64(p << 12) == 0


def test_gfp_comp_marks_compound_head_with_order():
    """__GFP_COMP on order > 0 sets PageHead and the compound order; order 0 stays plain."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL | Gfp.COMP, 3)
    assert pa.compound_order(p) == 3 and PageFlags.HEAD in pa.page_flags(p)
    q = pa.alloc_pages(GFP_KERNEL | Gfp.COMP, 0)
    assert pa.compound_order(q) == 0 and PageFlags.HEAD not in pa.page_flags(q)
    r = pa.alloc_pages(GFP_KERNEL, 3)
    assert pa.compound_order(r) == 0 and pa.page_order(r) == 3
    pa.free_pages(p, 3)
    assert pa.memmap.peek(p) is None and pa.audit() == []


def test_page_flags_derive_buddy_and_reserved():
    """PageBuddy marks free-block heads, PageReserved pages never handed over."""
    mem = PhysicalMemory(BASE, 2 * MAX_ORDER_NR_PAGES * 4096)
    pa = PageAllocator(mem)
    pa.free_range(B + MAX_ORDER_NR_PAGES, B + 2 * MAX_ORDER_NR_PAGES)
    assert pa.page_flags(B) == PageFlags.RESERVED
    assert pa.page_flags(B + MAX_ORDER_NR_PAGES) == PageFlags.BUDDY
    assert pa.page_flags(B + MAX_ORDER_NR_PAGES + 1) == PageFlags(0)
    p = pa.alloc_pages(GFP_KERNEL, 0)
    assert pa.page_flags(p) == PageFlags(0) and pa.page_flags(p + 1) == PageFlags.BUDDY
    pa.memmap.set_page_table(p)
    assert pa.page_flags(p) == PageFlags.TABLE


# -- BUG_ON paths -----------------------------------------------------------------------------


def test_double_free_is_detected():
    """Freeing a page twice raises ModelInvariantError (BUG_ON) and changes nothing."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 0)
    pa.free_pages(p, 0)
    before = pa.nr_free_pages()
    with pytest.raises(ModelInvariantError, match="double free"):
        pa.free_pages(p, 0)
    assert pa.nr_free_pages() == before and pa.audit() == []


def test_freeing_reserved_page_is_detected():
    """Freeing a page that memblock kept raises ModelInvariantError."""
    mem = PhysicalMemory(BASE, 2 * MAX_ORDER_NR_PAGES * 4096)
    pa = PageAllocator(mem)
    pa.free_range(B + 16, B + 2 * MAX_ORDER_NR_PAGES)
    with pytest.raises(ModelInvariantError, match="reserved"):
        pa.free_pages(B + 3, 0)


def test_freeing_with_wrong_order_or_tail_page_is_detected():
    """Order mismatches and frees of a non-head page raise ModelInvariantError."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 2)
    with pytest.raises(ModelInvariantError, match="allocated at order 2"):
        pa.free_pages(p, 0)
    with pytest.raises(ModelInvariantError, match="not the head"):
        pa.free_pages(p + 1, 0)
    pa.free_pages(p, 2)
    assert pa.audit() == []


def test_freeing_a_page_still_marked_page_table_is_a_bad_page():
    """Freeing a PageTable page reports Bad page state and leaks it, as Linux does."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 0)
    pa.memmap.set_page_table(p)
    pa.free_pages(p, 0)
    assert [w.function for w in pa.warnings] == ["free_pages_prepare"]
    assert not pa.is_free(p) and pa.counters["bad_page"] == 1
    assert any("leaked" in line for line in pa.audit())


def test_page_table_cleared_before_free_is_clean():
    """Negative control: pagetable_dtor before the free leaves no warning and no leak."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 0, owner="pgtable")
    pa.memmap.set_page_table(p)
    pa.memmap.clear_page_table(p)
    pa.free_pages(p, 0)
    assert pa.warnings == [] and pa.is_free(p) and pa.audit() == []


def test_split_page_lets_pages_be_freed_one_by_one():
    """split_page turns an order-3 block into 8 order-0 pages that merge back when freed."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL, 3)
    pa.split_page(p, 3)
    for q in range(p, p + 8):
        assert pa.page_order(q) == 0
    for q in reversed(range(p + 4, p + 8)):
        pa.free_pages(q, 0)
    pa.free_contig_range(p, 4)
    assert pa.buddyinfo() == [0] * MAX_PAGE_ORDER + [1] and pa.audit() == []


def test_split_page_refuses_compound_pages():
    """split_page of a __GFP_COMP block is a BUG, as in Linux."""
    pa = make()
    p = pa.alloc_pages(GFP_KERNEL | Gfp.COMP, 2)
    with pytest.raises(ModelInvariantError, match="compound"):
        pa.split_page(p, 2)


def test_audit_reports_corrupted_accounting_and_unmerged_buddies():
    """The audit is able to fail: a wrong free count and unmerged buddies are reported."""
    pa = make()
    pa.nr_free += 1
    assert any("nr_free" in line for line in pa.audit())
    pa.nr_free -= 1
    p = pa.alloc_pages(GFP_KERNEL, 1)
    del pa._alloc[p]  # forge two free buddies behind the allocator's back
    pa._add_to_free_list(p, 0, False)
    pa._add_to_free_list(p + 1, 0, False)
    pa.nr_free += 2
    assert any("unmerged" in line for line in pa.audit())


# -- a 1 TiB machine --------------------------------------------------------------------------


def test_mem_init_of_1tib_is_lazy_and_light():
    """Handing 2^28 pages over allocates almost nothing and behaves like eager blocks."""
    mem = PhysicalMemory(BASE, 1 << 40)
    pa = PageAllocator(mem)
    end = B + (1 << 28)
    tracemalloc.start()
    pa.free_range(B + 7, end - 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024
    assert pa.nr_free_pages() == (1 << 28) - 10
    assert pa.audit() == []
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER) == B + 1024
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER) == B + 2048
    assert pa.is_free(end - 4) and not pa.is_free(end - 3)
    pa.free_pages(B + 1024, MAX_PAGE_ORDER)  # back at the head of the order-10 list
    assert pa.alloc_pages(GFP_KERNEL, MAX_PAGE_ORDER) == B + 1024
    assert pa.buddyinfo()[MAX_PAGE_ORDER] == (1 << 18) - 4


# -- stateful: against a reference model -------------------------------------------------------

NBLOCKS = 4
NPAGES = NBLOCKS * MAX_ORDER_NR_PAGES
ORDERS = st.one_of(st.integers(0, 3), st.integers(0, MAX_PAGE_ORDER))
GFPS = st.sampled_from([GFP_KERNEL, GFP_ATOMIC, GFP_KERNEL | Gfp.COMP, GFP_PGTABLE_KERNEL])


class BuddyMachine(RuleBasedStateMachine):
    """Random allocs, frees, splits and late hand-overs against a set of busy pfns."""

    blocks = Bundle("blocks")

    @initialize(cuts=st.lists(st.integers(1, NPAGES - 1), max_size=6, unique=True))
    def boot(self, cuts):
        self.cleared: list[int] = []
        mem = PhysicalMemory(BASE, NPAGES * 4096)
        self.pa = PageAllocator(mem, clear_page=self.cleared.append)
        edges = [0, *sorted(cuts), NPAGES]
        ranges = [(B + a, B + b) for a, b in itertools.pairwise(edges)]
        self.pending = ranges[1::2]
        for r in ranges[0::2]:
            self.pa.free_range(*r)
        self.managed = {p for a, b in ranges[0::2] for p in range(a, b)}
        self.busy: dict[int, int] = {}  # head -> order
        self.used: set[int] = set()

    def fits(self, order: int) -> bool:
        """Reference: is some aligned 2^order run entirely free and managed?"""
        n = 1 << order
        free = self.managed - self.used
        return any(all(p + i in free for i in range(n)) for p in range(B, B + NPAGES, n))

    @rule(target=blocks, order=ORDERS, gfp=GFPS)
    def alloc(self, order, gfp):
        expect = self.fits(order)
        before = len(self.cleared)
        pfn = self.pa.alloc_pages(gfp | Gfp.NOWARN, order)
        assert (pfn is not None) == expect
        if pfn is None:
            return multiple()
        span = set(range(pfn, pfn + (1 << order)))
        assert pfn % (1 << order) == 0 and span <= self.managed and not span & self.used
        assert len(self.cleared) - before == (len(span) if gfp & Gfp.ZERO else 0)
        self.used |= span
        self.busy[pfn] = order
        if gfp & Gfp.COMP and order:
            assert self.pa.compound_order(pfn) == order
        return (pfn, order)

    @rule(block=consumes(blocks), tag=st.booleans())
    def free(self, block, tag):
        pfn, order = block
        if tag:  # a page-table life: ctor then dtor before the free
            self.pa.memmap.set_page_table(pfn)
            self.pa.memmap.clear_page_table(pfn)
        self.pa.free_pages(pfn, order)
        del self.busy[pfn]
        self.used -= set(range(pfn, pfn + (1 << order)))
        assert self.pa.is_free(pfn)

    @rule(target=blocks, block=consumes(blocks))
    def split(self, block):
        pfn, order = block
        if self.pa.compound_order(pfn):
            with pytest.raises(ModelInvariantError):
                self.pa.split_page(pfn, order)
            return multiple(block)
        self.pa.split_page(pfn, order)
        del self.busy[pfn]
        pages = [(p, 0) for p in range(pfn, pfn + (1 << order))]
        self.busy.update(pages)
        return multiple(*pages)

    @rule(offset=st.integers(0, NPAGES - 1), order=st.integers(0, 2))
    def bogus_free(self, offset, order):
        pfn = B + offset
        if self.busy.get(pfn) == order:
            return
        before = self.pa.nr_free_pages()
        with pytest.raises(ModelInvariantError):
            self.pa.free_pages(pfn, order)
        assert self.pa.nr_free_pages() == before

    @rule(data=st.data())
    def hand_over(self, data):
        if not self.pending:
            return
        r = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        self.pa.free_range(*r)
        self.managed |= set(range(*r))

    @invariant()
    def accounting_matches(self):
        if not hasattr(self, "pa"):
            return
        assert self.pa.nr_free_pages() == len(self.managed) - len(self.used)
        assert self.pa.audit() == []

    def teardown(self):
        if not hasattr(self, "pa"):
            return
        for pfn, order in list(self.busy.items()):
            self.pa.free_pages(pfn, order)
        for r in self.pending:
            self.pa.free_range(*r)
        assert self.pa.buddyinfo() == [0] * MAX_PAGE_ORDER + [NBLOCKS]
        assert self.pa.nr_free_pages() == NPAGES
        assert self.pa.audit() == []


BuddyMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBuddyMachine = BuddyMachine.TestCase
