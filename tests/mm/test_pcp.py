"""The per-CPU page lists' policy, kept as counts (kpsim.mm.pcp)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kpsim.hw.physmem import PhysicalMemory
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.page_alloc import PageAllocator
from kpsim.mm.pcp import (
    PerCpuPages,
    low_wmark_pages,
    pcp_allowed_order,
    zone_batchsize,
    zone_highsize,
)

_ORDERS = (0, 1, 2, 3, 9)


def test_batch_of_a_large_zone_is_63():
    """zone_batchsize(): a zone of 1 GiB or more gets the batch of 63 /proc/zoneinfo shows."""
    assert zone_batchsize(1 << 18) == 63
    assert zone_batchsize(4 << 20) == 63
    assert zone_batchsize(124674) == 31  # 512 MiB, less the kernel: 121 / 4 = 30 -> 45 -> 31
    assert zone_batchsize(100) == 1  # tiny zone: at least one


def test_high_is_the_low_watermark_split_over_cpus():
    """zone_highsize(): fraction 0 uses the low watermark / CPUs, at least 4 batches."""
    low = low_wmark_pages(1 << 18)
    assert zone_highsize(1 << 18, 63, 2, 0) == max(low // 2, 63 * 4)
    assert zone_highsize(1 << 18, 63, 2, 8) == (1 << 18) // 8 // 2
    assert zone_highsize(1000, 1, 64, 0) == 4  # many CPUs, small zone: four batches


def test_pcp_orders():
    """pcp_allowed_order(): orders 0..PAGE_ALLOC_COSTLY_ORDER and the PMD order only."""
    assert [o for o in range(11) if pcp_allowed_order(o)] == [0, 1, 2, 3, 9]


def _pcp(managed: int = 1 << 18) -> PerCpuPages:
    p = PerCpuPages(nr_cpus=2)
    p.setup(managed)
    return p


def test_free_then_alloc_of_the_same_order_makes_no_buddy_work():
    """Freed pages are handed back to the next allocations: no refill, no drain."""
    p = _pcp()
    for _ in range(300):
        p.alloc(0, 1 << 20)
    before = dict(p.counters)
    for _ in range(10):
        for _ in range(256):
            p.free(0)
        for _ in range(256):
            p.alloc(0, 1 << 20)
    assert dict(p.counters) == before


def test_frees_without_allocations_drain_to_the_buddy():
    """Negative control: a run of frees past pcp->high is given back in drains."""
    p = _pcp()
    n = 20 * p.high_min
    for _ in range(n):
        p.free(0)
    c = p.counters
    assert c["pcp_drain"] > 0
    assert c["buddy_free"] == n - p.count
    assert p.count < p.high_min


def test_allocations_refill_in_batches():
    """An empty list is refilled by rmqueue_bulk with at least a batch (alloc_factor grows it)."""
    p = _pcp()
    p.alloc(0, 1 << 20)
    assert p.counters["pcp_refill"] == 1 and p.counters["buddy_alloc"] == p.batch
    for _ in range(5000):
        p.alloc(0, 1 << 20)
    assert p.counters["buddy_alloc"] == 5001 + p.count
    assert p.counters["pcp_refill"] < 5001 // p.batch


def test_order_the_lists_do_not_take_goes_to_the_buddy():
    """An order-4 free is one free_one_page; the lists are untouched."""
    p = _pcp()
    p.free(4)
    assert p.counters["buddy_free"] == 1 and p.count == 0


def test_thp_free_drains_the_pmd_order_list():
    """A freed order-9 block fills pcp->high at once and goes back to the buddy."""
    p = _pcp(1 << 17)  # 512 MiB: high_min below 512 pages
    assert p.high_min < 512
    p.free(9)
    assert p.counters["buddy_free"] == 1 and p.count == 0


@given(st.lists(st.booleans(), max_size=3000))
def test_order0_pages_are_conserved(ops):
    """Order 0: pages on the list = taken from the buddy + freed - allocated - given back."""
    p = _pcp(1 << 16)
    allocs = frees = 0
    for is_alloc in ops:
        if is_alloc:
            p.alloc(0, 1 << 20)
            allocs += 1
        else:
            p.free(0)
            frees += 1
        c = p.counters
        assert p.count == c["buddy_alloc"] + frees - allocs - c["buddy_free"] >= 0
        assert p.count <= p.high_max


@given(st.lists(st.tuples(st.booleans(), st.sampled_from((*_ORDERS, 4, 10))), max_size=400))
def test_lists_stay_consistent_for_any_order(ops):
    """Any mix of orders: list counts never go negative and add up to pcp->count."""
    p = _pcp(1 << 16)
    for is_alloc, order in ops:
        if is_alloc and pcp_allowed_order(order):
            p.alloc(order, 1 << 20)
        elif not is_alloc:
            p.free(order)
        assert min(p.lists) >= 0
        assert p.count == sum(n << o for n, o in zip(p.lists, _ORDERS, strict=True))


def test_free_tail_counts_the_tail_pages_of_a_compound_free():
    """__free_pages_prepare's tail loop: 2^order - 1 per freed block of order > 0."""
    mem = PhysicalMemory(1 << 30, 64 << 20)
    pa = PageAllocator(mem)
    pa.free_range(pa.start_pfn, pa.end_pfn)
    pfn = pa.alloc_pages(GFP_KERNEL | Gfp.COMP, 9)
    small = pa.alloc_pages(GFP_KERNEL, 0)
    assert pfn is not None and small is not None
    pa.free_pages(small, 0)
    assert pa.counters["free_tail"] == 0
    pa.free_pages(pfn, 9)
    assert pa.counters["free_tail"] == 511


def _state(p: PerCpuPages) -> tuple[object, ...]:
    return (list(p.lists), p.count, p.high, p.free_count, p.alloc_factor, p.flags,
            dict(p.counters))  # fmt: skip


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(_ORDERS)), max_size=200),
    st.integers(1, 3000),
    st.sampled_from((1 << 10, 1 << 14, 1 << 18)),
)
def test_free_order0_is_n_frees_of_one_page(ops, n, managed):
    """free_order0(n) leaves the lists, counts, tuning state and counters exactly as n
    free(0) calls do, from any state a mix of allocations and frees leads to; control:
    n - 1 frees leave a different state."""
    a, b, c = _pcp(managed), _pcp(managed), _pcp(managed)
    for p in (a, b, c):
        for is_alloc, order in ops:
            if is_alloc:
                p.alloc(order, 1 << 20)
            else:
                p.free(order)
    a.free_order0(n)
    for _ in range(n):
        b.free(0)
    for _ in range(n - 1):
        c.free(0)
    assert _state(a) == _state(b)
    assert _state(c) != _state(b)
