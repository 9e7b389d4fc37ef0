"""Bulk order-0 allocation and freeing leave the buddy allocator exactly as one-by-one calls."""

from __future__ import annotations

import random

import pytest

from kpsim.hw.physmem import PhysicalMemory
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.page_alloc import PageAllocator

from .user_rig import buddy_state

BASE = 0x4000_0000
B = BASE >> 12


def make(pages: int) -> PageAllocator:
    pa = PageAllocator(PhysicalMemory(BASE, pages << 12))
    pa.free_range(B, B + pages)
    return pa


def state(pa: PageAllocator) -> tuple[object, ...]:
    """Everything that decides later allocations: lists in order, orders, runs, counters."""
    return (*buddy_state(pa), dict(pa.counters))


def fragment(pa: PageAllocator, rng: random.Random) -> list[int]:
    """Allocate and free a random mix of orders so that every list has blocks."""
    held = []
    for _ in range(300):
        o = rng.choice([0, 0, 0, 1, 2, 3, 5])
        p = pa.alloc_pages(GFP_KERNEL, o)
        if p is not None:
            if o:
                pa.split_page(p, o)
                held.extend(range(p, p + (1 << o)))
            else:
                held.append(p)
    rng.shuffle(held)
    for p in held[: len(held) // 2]:
        pa.free_pages(p, 0)
    return sorted(held[len(held) // 2 :])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [1, 7, 64, 700, 3000])
def test_alloc_pages_bulk_matches_one_by_one(seed: int, n: int) -> None:
    """alloc_pages_bulk returns the pfns, lists and counters of n alloc_pages(gfp, 0) calls."""
    a, b = make(4096 + 512), make(4096 + 512)
    fragment(a, random.Random(seed))
    fragment(b, random.Random(seed))
    assert state(a) == state(b)
    one = [a.alloc_pages(GFP_KERNEL | Gfp.ZERO, 0) for _ in range(n)]
    one = [p for p in one if p is not None]
    bulk = b.alloc_pages_bulk(GFP_KERNEL | Gfp.ZERO, b.plan_bulk(n))
    assert bulk == one
    a.counters.pop("alloc_fail", None), a.counters.pop("alloc_fail_order_0", None)
    a.counters.pop("alloc_fail_warn", None)
    assert state(a) == state(b)
    assert a.audit() == b.audit() == []


@pytest.mark.parametrize("seed", range(6))
def test_free_pages_bulk_matches_one_by_one(seed: int) -> None:
    """free_pages_bulk over ascending pfns ends in the state of one free_pages per page."""
    a, b = make(4096), make(4096)
    held_a = fragment(a, random.Random(seed))
    held_b = fragment(b, random.Random(seed))
    extra_a = a.alloc_pages_bulk(GFP_KERNEL, a.plan_bulk(1500))
    extra_b = b.alloc_pages_bulk(GFP_KERNEL, b.plan_bulk(1500))
    rng = random.Random(seed + 100)
    pick = sorted(set(rng.sample(held_a + extra_a, (len(held_a) + len(extra_a)) // 2))
                  | set(extra_a[:1024]))  # fmt: skip
    assert held_a == held_b and extra_a == extra_b
    for p in pick:
        a.free_pages(p, 0)
    b.free_pages_bulk(pick)
    assert state(a) == state(b)
    assert a.audit() == b.audit() == []


def test_free_pages_bulk_negative_control() -> None:
    """The comparison can fail: freeing the same pages in another order changes the lists."""
    a, b = make(4096), make(4096)
    pa = a.alloc_pages_bulk(GFP_KERNEL, a.plan_bulk(40))
    pb = b.alloc_pages_bulk(GFP_KERNEL, b.plan_bulk(40))
    keep_a = pa[1::3]
    keep_b = pb[1::3]
    free_a = [p for p in pa if p not in keep_a]
    for p in reversed(free_a):
        a.free_pages(p, 0)
    b.free_pages_bulk([p for p in pb if p not in keep_b])
    assert state(a) != state(b)
