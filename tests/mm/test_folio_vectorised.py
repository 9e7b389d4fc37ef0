"""The whole-array folio batching (kpsim.mm.folio) and the run-wise gather accounting
(MmuGather.remove_ptes) give exactly what the loop-based versions they replaced gave
(kept in tests/mm/_folio_reference.py): checked call by call on a workload with THPs
(PMD-mapped, PTE-mapped after a split, partly unmapped), COW-shared pages after fork,
zero-page entries and file pages, and on synthetic inputs from every gather state."""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from kpsim.mm import fork as fork_mod
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import memory as memory_mod
from kpsim.mm import mmap as mm_
from kpsim.mm.folio import folio_pte_batch_count, folio_pte_batches, large_heads, unique_sorted
from kpsim.mm.mm_types import PAGE_SIZE
from kpsim.mm.mmu_gather import MAX_GATHER_BATCH, MAX_GATHER_BATCH_COUNT, MmuGather

from ._folio_reference import (
    ref_folio_pte_batches,
    ref_free_unmapped,
    ref_large_heads,
    ref_remove_ptes,
)
from .user_rig import RW, M, T, machine, proc, region

GATHER_STATE = ("_batch", "_nr", "start", "end", "freed_tables", "cleared_ptes", "flushes")


class _Recorder:
    """An arch whose tlb_flush only records its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def tlb_flush(self, *args: Any, **kw: Any) -> None:
        self.calls.append((args, tuple(sorted(kw.items()))))


def _fake_gather(batch: int = 0, nr: int = 0) -> MmuGather:
    mm: Any = SimpleNamespace(ctx=SimpleNamespace(arch=_Recorder()), asid=7)
    g = MmuGather(mm)
    g._batch, g._nr = batch, nr
    return g


def _gather_state(g: MmuGather) -> tuple[Any, ...]:
    return (*(getattr(g, k) for k in GATHER_STATE), tuple(g.mm.ctx.arch.calls))


def _check_remove_ptes(g: MmuGather, addrs: Any, starts: Any, sizes: Any) -> None:
    """Run the new remove_ptes on ``g`` and the reference on a copy; same outcome."""
    shadow = copy.copy(g)
    shadow.mm = SimpleNamespace(ctx=SimpleNamespace(arch=_Recorder()), asid=g.mm.asid)
    new_arch: Any = _Recorder()
    g_copy = copy.copy(g)
    g_copy.mm = SimpleNamespace(ctx=SimpleNamespace(arch=new_arch), asid=g.mm.asid)
    g_copy.remove_ptes(addrs, starts, sizes)
    ref_remove_ptes(shadow, addrs, starts, sizes)
    assert _gather_state(g_copy) == _gather_state(shadow)


# --------------------------------------------------------------------- synthetic


def _synthetic_batches(rng: random.Random, n: int) -> tuple[Any, Any, Any]:
    """Batches over ``n`` present PTEs: sizes 1 or a run of a large folio, with
    some zero-page PTEs (no batch) in between."""
    starts, sizes, i = [], [], 0
    while i < n:
        r = rng.random()
        size = 1 if r < 0.6 else min(n - i, rng.randint(2, 40))
        if rng.random() > 0.1:  # else a zero-page entry: no folio batch
            starts.append(i)
            sizes.append(size)
        i += size
    idx = np.sort(rng.sample(range(512), n)) if n <= 512 else np.arange(n)
    addrs = (5 << 21) + (idx.astype(np.int64) << 12)
    return addrs, np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64)


@pytest.mark.pure_python("a duck-typed mm stands in for MmStruct")
@pytest.mark.parametrize("seed", range(40))
def test_remove_ptes_matches_reference_from_any_gather_state(seed: int) -> None:
    rng = random.Random(seed)
    batch = rng.choice([0, 1, MAX_GATHER_BATCH_COUNT - 1, MAX_GATHER_BATCH_COUNT])
    nr = rng.randint(0, (7 if batch == 0 else MAX_GATHER_BATCH - 1) - 1)
    g = _fake_gather(batch, nr)
    for _ in range(6):
        n = rng.choice([0, 1, 2, 17, 300, 512])
        addrs, starts, sizes = _synthetic_batches(rng, n)
        _check_remove_ptes(g, addrs, starts, sizes)
        g.remove_ptes(addrs, starts, sizes)  # go on from the new state


@pytest.mark.pure_python("a duck-typed mm stands in for MmStruct")
def test_remove_ptes_fills_the_whole_gather_and_flushes_like_the_reference() -> None:
    """Enough small folios to run every batch page full several times."""
    g = _fake_gather()
    idx = np.arange(512, dtype=np.int64)
    ones = np.ones(512, dtype=np.int64)
    for slot in range(60):
        _check_remove_ptes(g, (slot << 21) + (idx << 12), idx, ones)
        g.remove_ptes((slot << 21) + (idx << 12), idx, ones)
    assert g.flushes >= 2  # the gather did run full (a control for the comparison)


@pytest.mark.parametrize("seed", range(30))
def test_folio_pte_batches_match_reference_on_synthetic_tables(seed: int) -> None:
    """pfns mixing THP subpages (in and out of order, partial), small pages and the
    zero page, over dense and sparse table positions."""
    rng = random.Random(seed)
    m = machine("256M")
    p = proc(m)
    ctx = p.ctx
    pa = ctx.k.page_alloc
    region(p, T, 4 * M)
    p.madvise(T, 4 * M, madvise_mod.MADV_HUGEPAGE)
    p.touch(T, write=True)
    p.touch(T + 2 * M, write=True)
    thp = sorted(
        {int(x) & ~511 for x in range(pa.start_pfn, pa.end_pfn, 512) if pa.compound_order(x) == 9}
    )
    assert thp  # the control: there are live THP folios to batch
    small = [pa.alloc_pages(0, 0) for _ in range(20)]
    pool: list[int] = [ctx.zero_pfn, *[s for s in small if s is not None]]
    pfns: list[int] = []
    while len(pfns) < 512:
        r = rng.random()
        if r < 0.5:
            h = rng.choice(thp)
            a = rng.randint(0, 511)
            run = rng.randint(1, 80)
            pfns.extend(h + i for i in range(a, min(512, a + run)))
        else:
            pfns.append(rng.choice(pool))
    arr = np.array(pfns[: rng.choice([1, 2, 100, 512])], dtype=np.int64)
    n = arr.size
    idx = np.arange(n) if rng.random() < 0.5 else np.sort(rng.sample(range(512), n))
    got = folio_pte_batches(ctx, idx, arr)
    want = ref_folio_pte_batches(ctx, idx, arr)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert np.array_equal(large_heads(ctx, arr), ref_large_heads(ctx, arr))
    assert folio_pte_batch_count(ctx, idx, arr) == want[0].size
    # far-apart frames (np.unique path) and a wide window (bincount path)
    far = np.concatenate([arr, arr + 0, [pa.end_pfn - 1]]).astype(np.int64)
    far_idx = np.arange(far.size)
    assert np.array_equal(large_heads(ctx, far), ref_large_heads(ctx, far))
    got = folio_pte_batches(ctx, far_idx, far)
    want = ref_folio_pte_batches(ctx, far_idx, far)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


# --------------------------------------------------------------------- workload


def _install_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap every use of the vectorised functions with a comparison to the reference."""
    seen = [0, 0, 0]

    def batches(ctx: Any, idx: Any, pfns: Any) -> tuple[Any, Any]:
        got = folio_pte_batches(ctx, idx, pfns)
        want = ref_folio_pte_batches(ctx, idx, pfns)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        seen[0] += int(np.any(np.asarray(got[1]) > 1))
        return got

    def count(ctx: Any, idx: Any, pfns: Any) -> int:
        got = folio_pte_batch_count(ctx, idx, pfns)
        assert got == ref_folio_pte_batches(ctx, idx, pfns)[0].size
        seen[1] += 1
        return got

    real_remove = MmuGather.remove_ptes

    def remove(self: MmuGather, addrs: Any, starts: Any, sizes: Any) -> None:
        shadow = copy.copy(self)
        rec: Any = _Recorder()
        shadow.mm = SimpleNamespace(ctx=SimpleNamespace(arch=rec), asid=self.mm.asid)
        ref_remove_ptes(shadow, addrs, starts, sizes)
        mine = copy.copy(self)
        rec2: Any = _Recorder()
        mine.mm = SimpleNamespace(ctx=SimpleNamespace(arch=rec2), asid=self.mm.asid)
        real_remove(mine, addrs, starts, sizes)
        assert _gather_state(mine) == _gather_state(shadow)
        seen[2] += 1
        real_remove(self, addrs, starts, sizes)

    monkeypatch.setattr(memory_mod, "folio_pte_batches", batches)
    monkeypatch.setattr(fork_mod, "folio_pte_batch_count", count)
    monkeypatch.setattr(MmuGather, "remove_ptes", remove)
    return seen


def _workload(m: Any) -> None:
    p = proc(m)
    # THPs: two PMD-mapped, one split to PTEs by a partial munmap, one by mprotect
    region(p, T, 8 * M)
    p.madvise(T, 8 * M, madvise_mod.MADV_HUGEPAGE)
    for i in range(4):
        p.touch(T + i * 2 * M, write=True)
    p.munmap(T + 2 * M + 64 * PAGE_SIZE, 16 * PAGE_SIZE)  # partly unmapped THP
    p.mprotect(T + 4 * M + 100 * PAGE_SIZE, 3 * PAGE_SIZE, mm_.PROT_READ)  # split, mapped
    # small anonymous pages, some only read (zero page)
    region(p, T + 64 * M, 4 * M)
    p.touch_range(T + 64 * M, 2 * M, PAGE_SIZE, write=True)
    p.touch_range(T + 66 * M, 2 * M, 2 * PAGE_SIZE, write=False)
    # file pages, private and shared
    f = p.ctx.new_file(1 * M)
    fa = p.mmap(None, 1 * M, mm_.PROT_READ, mm_.MAP_PRIVATE, f)
    p.touch_range(fa, 1 * M, PAGE_SIZE, write=False)
    fb = p.mmap(None, 1 * M, RW, mm_.MAP_SHARED, f)
    p.touch_range(fb, 512 * 1024, PAGE_SIZE, write=True)
    # fork: COW-shared pages and PTE-mapped THP runs in both
    c = p.fork()
    c.touch(T + 64 * M, write=True)  # COW break in the child
    c.touch(T + 4 * M + 5 * PAGE_SIZE, write=True)  # in a PTE-mapped THP
    c.munmap(T + 2 * M, 2 * M)
    c.exit()
    p.madvise(T + 64 * M, 1 * M, madvise_mod.MADV_DONTNEED)
    p.munmap(T, 8 * M)
    p.munmap(T + 64 * M, 4 * M)
    p.exit()


def test_workload_calls_agree_with_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    m = machine("256M")
    seen = _install_checks(monkeypatch)
    _workload(m)
    assert seen[0] > 0, "no multi-page folio batch was compared"
    assert seen[1] > 0 and seen[2] > 0


def test_workload_counters_identical_with_reference_implementation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same workload, once with the vectorised functions and once with the reference
    ones installed: every counter (kernel, allocator, hardware) is identical."""
    m1 = machine("256M")
    _workload(m1)
    new = m1.counters.snapshot()
    with monkeypatch.context() as mp:
        mp.setattr(memory_mod, "folio_pte_batches", ref_folio_pte_batches)
        mp.setattr(
            fork_mod,
            "folio_pte_batch_count",
            lambda ctx, idx, pfns: int(ref_folio_pte_batches(ctx, idx, pfns)[0].size),
        )
        mp.setattr(MmuGather, "remove_ptes", ref_remove_ptes)
        mp.setattr(memory_mod, "free_unmapped", ref_free_unmapped)
        m2 = machine("256M")
        _workload(m2)
        old = m2.counters.snapshot()
    assert new == old
    assert new.get("zap_folio", 0) > 0 and new.get("fork_folio", 0) > 0


@pytest.mark.parametrize("seed", range(20))
def test_unique_sorted_is_np_unique(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 3, 50, 512):
        a = rng.integers(0, max(1, n // 2 + 1), size=n, dtype=np.int64) + 1000
        got, want = unique_sorted(a), np.unique(a)
        assert got.dtype == want.dtype and np.array_equal(got, want)
