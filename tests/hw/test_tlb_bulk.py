"""The TLB's bulk tier is a storage layout only: a TLB filled in bulk answers every
lookup and invalidation exactly as one filled an entry at a time (property-tested)."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.mmu import KERNEL_VA_START
from kpsim.hw.arm64.tlb import ASID_SHIFT, Tlb
from kpsim.hw.physmem import PhysicalMemory

USER = 0x7F00_0000_0000
KERNEL = KERNEL_VA_START + (1 << 40)
PFN0 = 0x40000  # the first pfn of a 1 GiB DRAM at 1 GiB
#: a user page descriptor without its output address (nG, AF, valid page)
ATTRS = d.VALID | d.TYPE | d.AF | d.NG | (1 << 6)


def _mem() -> PhysicalMemory:
    mem = PhysicalMemory(1 << 30, 1 << 30)
    for pfn in range(PFN0, PFN0 + 3 * 512):
        mem.frame(pfn)
    return mem


def _key(va: int, tag: int) -> int:
    return (tag << ASID_SHIFT) | (va >> 12)


#: one fill: (0 = kernel / ASID + 1, first page, pages, page step, rights, order: 0
#: ascending, -1 descending, else a seed to shuffle the pages with, as the buddy
#: allocator hands out the pages whose linear aliases clear_page fills)
_FILL = st.tuples(
    st.sampled_from([0, 1, 2]),
    st.integers(0, 1100),
    st.integers(1, 300),
    st.sampled_from([1, 1, 2, 5]),
    st.sampled_from([(5, 5), (4, 0)]),
    st.sampled_from([0, 0, -1, 1, 2, 3]),
)
_OP = st.one_of(
    st.tuples(st.just("va"), st.integers(0, 1400), st.sampled_from([None, 0, 1])),
    st.tuples(
        st.just("range"), st.integers(0, 1400), st.integers(0, 700), st.sampled_from([None, 0, 1])
    ),
    st.tuples(st.just("asid"), st.sampled_from([0, 1])),
    st.tuples(st.just("take"), st.integers(0, 1400), st.sampled_from([0, 1, 2])),
    st.tuples(
        st.just("all"),
    ),
)


def _apply_fill(bulk: Tlb, ref: Tlb, fill: tuple[int, int, int, int, tuple[int, int], int]) -> None:
    tag, first, n, step, (el1, el0), order = fill
    base = KERNEL if tag == 0 else USER
    pages = [p for p in range(first, first + n * step, step)]
    if order == -1:
        pages.reverse()
    elif order:
        random.Random(order).shuffle(pages)
    vas = [base + p * 4096 for p in pages]
    keys = [_key(va, tag) for va in vas]
    if any(ref.get(k) is not None for k in keys):
        return  # a fill only ever caches pages that missed
    pfns = [PFN0 + (p % 1536) for p in pages]
    attrs = ATTRS if tag else ATTRS & ~d.NG
    descs = np.array([(pfn << 12) | attrs for pfn in pfns], dtype=np.uint64)
    vpns = np.array([va >> 12 for va in vas], dtype=np.int64)
    if not bulk.bulk_fill(tag, vpns, descs, el1, el0):
        for k, v in zip(keys, descs.tolist(), strict=True):  # the caller's fallback
            bulk.insert(
                k,
                (
                    v & d.OA_MASK,
                    el1,
                    el0,
                    (v >> 60) & 7,
                    3,
                    v,
                    bulk.mem.frames[(v & d.OA_MASK) >> 12],
                ),
                12,
            )  # type: ignore[union-attr]
    for k, v in zip(keys, descs.tolist(), strict=True):
        ref.insert(
            k,
            (v & d.OA_MASK, el1, el0, (v >> 60) & 7, 3, v, ref.mem.frames[(v & d.OA_MASK) >> 12]),
            12,
        )  # type: ignore[union-attr]


def _state(t: Tlb) -> list[tuple[int, tuple[object, ...]]]:
    return sorted((k, (*e[:6], id(e[6]))) for k, e in t.items())


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(_FILL, max_size=6),
    ops=st.lists(_OP, max_size=8),
    more=st.lists(_FILL, max_size=3),
)
def test_bulk_tier_is_invisible(fills, ops, more) -> None:
    mem = _mem()
    bulk, ref = Tlb(), Tlb()
    bulk.mem = ref.mem = mem
    for f in fills:
        _apply_fill(bulk, ref, f)
    assert _state(bulk) == _state(ref)
    for op in ops:
        if op[0] == "va":
            _, page, asid = op
            for base in (USER, KERNEL):
                bulk.invalidate_va(base + page * 4096, asid)
                ref.invalidate_va(base + page * 4096, asid)
        elif op[0] == "range":
            _, page, n, asid = op
            for base in (USER, KERNEL):
                bulk.invalidate_range(base + page * 4096, base + (page + n) * 4096, asid)
                ref.invalidate_range(base + page * 4096, base + (page + n) * 4096, asid)
        elif op[0] == "asid":
            bulk.invalidate_asid(op[1])
            ref.invalidate_asid(op[1])
        elif op[0] == "take":
            _, page, tag = op
            key = _key((KERNEL if tag == 0 else USER) + page * 4096, tag)
            got = bulk.get(key)
            taken = bulk.bulk_take(key)
            assert (got is None) == (ref.get(key) is None)
            assert taken is None or got == taken
            assert bulk.bulk_peek(key) is None  # moved into the dicts, or never there
        else:
            bulk.invalidate_all()
            ref.invalidate_all()
        assert _state(bulk) == _state(ref)
        assert len(bulk) == len(ref)
    for f in more:
        _apply_fill(bulk, ref, f)
    assert _state(bulk) == _state(ref)
    for tag in (0, 1, 2):
        base = KERNEL if tag == 0 else USER
        vpns = [(base >> 12) + p for p in range(0, 1400, 7)]
        assert bulk.bulk_any(tag, vpns) == any(
            bulk.bulk_peek((tag << ASID_SHIFT) | v) is not None for v in vpns
        )
        for lo in range(0, 1400, 300):  # bulk_near is conservative: never a false "no"
            few = vpns[lo // 7 : lo // 7 + 40]
            if few and not bulk.bulk_near(tag, few[0], few[-1]):
                assert not bulk.bulk_any(tag, few)


def test_state_comparison_sees_a_missing_entry() -> None:
    """Negative control: a bulk TLB missing one page compares unequal."""
    mem = _mem()
    bulk, ref = Tlb(), Tlb()
    bulk.mem = ref.mem = mem
    _apply_fill(bulk, ref, (1, 0, 10, 1, (5, 5), 0))
    assert bulk.bulk and not bulk.asids  # filled in bulk
    assert _state(bulk) == _state(ref)
    bulk.invalidate_va(USER + 3 * 4096, 0)
    assert _state(bulk) != _state(ref)
    assert bulk.get(_key(USER + 3 * 4096, 1)) is None
    assert ref.get(_key(USER + 3 * 4096, 1)) is not None


def test_a_fill_whose_first_and_last_pages_share_a_region_keeps_the_middle_apart() -> None:
    """Pages of 2 MiB regions A, B, A in that order (found by the soak): each page's
    entry holds its own descriptor, the page of B is not filed under A; the reference
    TLB filled one entry at a time holds the same."""
    mem = _mem()
    bulk, ref = Tlb(), Tlb()
    bulk.mem = ref.mem = mem
    pages = [0, 600, 1]  # regions 0, 1, 0
    base = KERNEL >> 12
    descs = np.array([((PFN0 + p) << 12) | (ATTRS & ~d.NG) for p in pages], dtype=np.uint64)
    assert bulk.bulk_fill(0, np.array([base + p for p in pages]), descs, 5, 5)
    for p, v in zip(pages, descs.tolist(), strict=True):
        ref.insert(base + p, (v & d.OA_MASK, 5, 5, 0, 3, v, mem.frames[PFN0 + p]), 12)
    assert _state(bulk) == _state(ref)
    for p in pages:
        got = bulk.get(base + p)
        assert got is not None and got[0] == (PFN0 + p) << 12, (p, got)
