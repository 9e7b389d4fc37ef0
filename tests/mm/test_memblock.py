"""memblock (kpsim.mm.memblock): regions, top-down allocation, and the hand-over to the buddy."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kpsim.errors import ModelInvariantError
from kpsim.hw.physmem import PhysicalMemory
from kpsim.mm.gfp import GFP_KERNEL
from kpsim.mm.memblock import Memblock
from kpsim.mm.page_alloc import MAX_ORDER_NR_PAGES, MAX_PAGE_ORDER, PageAllocator

BASE = 0x4000_0000
SZ = 16 << 20  # 4 order-10 blocks


def booted(size: int = SZ) -> Memblock:
    mb = Memblock()
    mb.memblock_add(BASE, size)
    return mb


def test_allocation_is_top_down():
    """Successive allocations come from the top of memory downwards."""
    mb = booted()
    a = mb.memblock_phys_alloc(4096, 4096)
    b = mb.memblock_phys_alloc(4096, 4096)
    assert a == BASE + SZ - 4096 and b == a - 4096
    assert mb.reserved_regions() == [(b, 8192)]


def test_allocation_honours_alignment_below_a_reservation():
    """A 2 MiB-aligned request skips down to the next aligned address that fits."""
    mb = booted()
    mb.memblock_reserve(BASE + SZ - 4096, 4096)
    a = mb.memblock_phys_alloc(1 << 20, 2 << 20)
    assert a == BASE + SZ - (2 << 20)
    assert a % (2 << 20) == 0


def test_allocation_failure_returns_zero_and_counts():
    """A request larger than any free range returns 0 and reserves nothing."""
    mb = booted()
    mb.memblock_reserve(BASE + (8 << 20), 4096)
    assert mb.memblock_phys_alloc(9 << 20, 4096) == 0
    assert mb.counters["memblock_alloc_fail"] == 1
    assert mb.reserved_regions() == [(BASE + (8 << 20), 4096)]


def test_allocation_respects_current_limit_and_range():
    """memblock_set_current_limit and an explicit range bound where memory is found."""
    mb = booted()
    mb.memblock_set_current_limit(BASE + (4 << 20))
    assert mb.memblock_phys_alloc(4096, 4096) == BASE + (4 << 20) - 4096
    got = mb.memblock_phys_alloc_range(4096, 4096, BASE, BASE + (1 << 20))
    assert got == BASE + (1 << 20) - 4096


def test_first_page_of_physical_memory_is_never_returned():
    """With RAM at address 0, the first page is skipped (0 means failure)."""
    mb = Memblock()
    mb.memblock_add(0, 3 * 4096)
    assert mb.memblock_phys_alloc(4096, 4096) == 2 * 4096
    assert mb.memblock_phys_alloc(4096, 4096) == 4096
    assert mb.memblock_phys_alloc(4096, 4096) == 0


def test_bottom_up_mode_allocates_from_the_bottom():
    """memblock_set_bottom_up(True) returns the lowest fitting address."""
    mb = booted()
    mb.memblock_set_bottom_up(True)
    assert mb.memblock_phys_alloc(4096, 4096) == BASE


def test_zero_alignment_warns_and_uses_cache_line():
    """Alignment 0 is a caller bug Linux warns about and replaces with SMP_CACHE_BYTES."""
    mb = booted()
    a = mb.memblock_phys_alloc(100, 0)
    assert a % 64 == 0 and [w.function for w in mb.warnings] == ["memblock_alloc_range_nid"]


def test_regions_merge_and_split():
    """Adjacent reservations merge; freeing the middle splits them."""
    mb = booted()
    mb.memblock_reserve(BASE, 4096)
    mb.memblock_reserve(BASE + 4096, 4096)
    mb.memblock_reserve(BASE + 2048, 8192)
    assert mb.reserved_regions() == [(BASE, 10240)]
    mb.memblock_free(BASE + 4096, 4096)
    assert mb.reserved_regions() == [(BASE, 4096), (BASE + 8192, 2048)]
    assert next(iter(mb.for_each_free_mem_range())) == (BASE + 4096, BASE + 8192)


def test_free_all_hands_whole_free_pages_to_the_buddy():
    """memblock_free_all gives every free page, rounded inward, to the page allocator."""
    mb = booted()
    mb.memblock_reserve(BASE + 100, 5000)  # touches pages 0 and 1
    top = mb.memblock_phys_alloc(4096, 4096)
    pa = PageAllocator(PhysicalMemory(BASE, SZ))
    n = mb.memblock_free_all(pa)
    assert n == SZ // 4096 - 3 == pa.nr_free_pages()
    assert not pa.is_managed(BASE >> 12) and not pa.is_managed((BASE >> 12) + 1)
    assert not pa.is_managed(top >> 12) and pa.is_managed((BASE >> 12) + 2)
    assert pa.audit() == []


def test_memblock_allocation_after_free_all_is_refused():
    """After mem_init memblock no longer owns free memory: allocating is a BUG."""
    mb = booted()
    mb.memblock_free_all(PageAllocator(PhysicalMemory(BASE, SZ)))
    assert mb.freed_all
    with pytest.raises(ModelInvariantError, match="memblock_free_all"):
        mb.memblock_phys_alloc(4096, 4096)
    with pytest.raises(ModelInvariantError, match="twice"):
        mb.memblock_free_all(PageAllocator(PhysicalMemory(BASE, SZ)))


def test_free_late_returns_reserved_pages_to_the_buddy():
    """memblock_free_late gives a boot reservation to the buddy, where it merges."""
    mb = booted()
    a = mb.memblock_phys_alloc(2 << 20, 2 << 20)
    pa = PageAllocator(PhysicalMemory(BASE, SZ))
    with pytest.raises(ModelInvariantError):
        mb.memblock_free_late(a, 2 << 20)
    mb.memblock_free_all(pa)
    assert pa.nr_free_pages() == (SZ - (2 << 20)) // 4096
    assert mb.memblock_free_late(a, 2 << 20) == 512
    assert pa.buddyinfo() == [0] * MAX_PAGE_ORDER + [SZ // 4096 // MAX_ORDER_NR_PAGES]
    assert pa.alloc_pages(GFP_KERNEL, 0) is not None and pa.audit() == []


# -- stateful: against a unit-granular reference ----------------------------------------------

UNIT = 512
NUNITS = 96  # 48 KiB of address space starting at 0, so the first-page rule matters
SPAN = st.tuples(st.integers(0, NUNITS - 1), st.integers(1, 24))
ALIGNS = st.sampled_from([512, 1024, 4096, 8192])


class MemblockMachine(RuleBasedStateMachine):
    """memblock against two sets of 512-byte units: memory and reserved."""

    def __init__(self):
        super().__init__()
        self.mb = Memblock()
        self.mem: set[int] = set()
        self.res: set[int] = set()
        self.limit = NUNITS

    @staticmethod
    def units(span):
        start, n = span
        return (
            set(range(start, min(start + n, NUNITS))),
            start * UNIT,
            min(n, NUNITS - start) * UNIT,
        )

    @rule(span=SPAN)
    def add(self, span):
        u, base, size = self.units(span)
        self.mb.memblock_add(base, size)
        self.mem |= u

    @rule(span=SPAN)
    def remove(self, span):
        u, base, size = self.units(span)
        self.mb.memblock_remove(base, size)
        self.mem -= u

    @rule(span=SPAN)
    def reserve(self, span):
        u, base, size = self.units(span)
        self.mb.memblock_reserve(base, size)
        self.res |= u

    @rule(span=SPAN)
    def free(self, span):
        u, base, size = self.units(span)
        self.mb.memblock_phys_free(base, size)
        self.res -= u

    @rule(limit=st.integers(0, NUNITS))
    def set_limit(self, limit):
        self.mb.memblock_set_current_limit(limit * UNIT)
        self.limit = limit

    def expected(self, n: int, align_units: int, bottom_up: bool) -> int | None:
        """Reference: highest (or lowest) aligned fitting unit at or above the first page."""
        free = self.mem - self.res
        first = 4096 // UNIT
        cands = range(first, self.limit - n + 1)
        fits = [a for a in cands if a % align_units == 0 and all(a + i in free for i in range(n))]
        if not fits:
            return None
        return min(fits) if bottom_up else max(fits)

    @rule(n=st.integers(1, 20), align=ALIGNS, bottom_up=st.booleans())
    def alloc(self, n, align, bottom_up):
        self.mb.memblock_set_bottom_up(bottom_up)
        want = self.expected(n, align // UNIT, bottom_up)
        got = self.mb.memblock_phys_alloc(n * UNIT, align)
        assert got == (0 if want is None else want * UNIT)
        if want is not None:
            self.res |= set(range(want, want + n))

    @invariant()
    def regions_match_reference(self):
        for mtype, ref in ((self.mb.memory, self.mem), (self.mb.reserved, self.res)):
            regions = list(mtype)
            for (_, e1), (b2, _) in itertools.pairwise(regions):
                assert e1 < b2  # sorted, disjoint and merged
            assert {a // UNIT for b, e in regions for a in range(b, e, UNIT)} == ref
        free = {a // UNIT for b, e in self.mb.for_each_free_mem_range() for a in range(b, e, UNIT)}
        assert free == self.mem - self.res


MemblockMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
TestMemblockMachine = MemblockMachine.TestCase
