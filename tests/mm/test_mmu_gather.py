"""TLB flushing after zap follows Linux's mmu_gather and arm64's tlb_flush: only the
range actually cleared is flushed (last-level TLBIs), freed tables need a walk-cache
flush (non-last-level), a full-mm teardown flushes the ASID once."""

from __future__ import annotations

import pytest

from kpsim.audit.invariants import audit
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import SegmentationFault
from kpsim.mm.mmu_gather import MAX_GATHER_BATCH, MAX_GATHER_BATCH_COUNT, MMU_GATHER_BUNDLE
from kpsim.mm.process import Process

from .user_rig import K4, M, T, proc, region
from .user_rig import machine as _machine

FLUSH = ("tlbi_va", "tlbi_va_nonleaf", "tlbi_asid", "tlbi_all")


def machine(memory: str):
    """Without hardened page tables: table frees would add kernel TLBIs (re-keying)."""
    return _machine(memory, hardened_pgtables=False)


def flushes(m, fn) -> dict[str, int]:
    before = m.counters.snapshot()
    fn()
    d = m.counters.since(before)
    return {k: d.get(k, 0) for k in FLUSH}


def tlb_holds(m, va: int) -> bool:
    return any(v == va for cpu in m.hw.cpus for v, _, _ in cpu.tlb.cached())


def test_munmap_of_an_untouched_region_flushes_nothing():
    m = machine("256M")
    p = proc(m)
    region(p, T, 4 * M)
    got = flushes(m, lambda: p.munmap(T, 4 * M))
    assert got == {"tlbi_va": 0, "tlbi_va_nonleaf": 0, "tlbi_asid": 0, "tlbi_all": 0}


def test_munmap_without_entries_but_freeing_tables_flushes_the_walk_cache_once():
    """No entry cleared (the page was dropped before), three tables freed: one
    non-last-level TLBI (stride PMD_SIZE over [T, T+4K))."""
    m = machine("256M")
    p = proc(m, pt_reclaim=False)
    region(p, T, 2 * M)
    p.touch(T, write=True)
    p.madvise(T, K4, madvise_mod.MADV_DONTNEED)
    assert p.pt_pages() == 3
    got = flushes(m, lambda: p.munmap(T, 2 * M))
    assert p.pt_pages() == 0
    assert got == {"tlbi_va": 1, "tlbi_va_nonleaf": 1, "tlbi_asid": 0, "tlbi_all": 0}


def test_munmap_of_a_touched_range_flushes_the_cleared_pages_then_the_tables():
    m = machine("256M")
    p = proc(m)
    region(p, T, 2 * M)
    for a in (T, T + K4, T + 2 * K4):
        p.touch(a, write=True)
    assert tlb_holds(m, T)
    got = flushes(m, lambda: p.munmap(T, 2 * M))
    # 3 VALE1IS for [T, T+12K) at tlb_end_vma, 1 VAE1IS for the freed tables
    assert got == {"tlbi_va": 4, "tlbi_va_nonleaf": 1, "tlbi_asid": 0, "tlbi_all": 0}
    assert not tlb_holds(m, T)
    with pytest.raises(SegmentationFault):
        p.touch(T)
    assert audit(m) == []


def test_a_skipped_flush_would_leave_a_stale_entry(monkeypatch):
    """Negative control for the test above: without the gather's flush the TLB still
    translates the unmapped page and the access succeeds."""
    m = machine("256M")
    p = proc(m)
    region(p, T, 2 * M)
    p.touch(T, write=True)
    monkeypatch.setattr(type(m.arch), "tlb_flush", lambda self, *a, **k: None)
    p.munmap(T, 2 * M)
    assert tlb_holds(m, T)
    p.touch(T)  # through the stale entry: no fault
    assert audit(m) != []


def test_munmap_of_512_pages_or_more_is_an_asid_flush():
    """``__flush_tlb_range``: MAX_DVM_OPS strides or more -> ``flush_tlb_mm``."""
    m = machine("256M")
    p = proc(m)
    region(p, T, 2 * M)
    p.touch_range(T, 2 * M, write=True)
    got = flushes(m, lambda: p.munmap(T, 2 * M))
    assert got == {"tlbi_va": 1, "tlbi_va_nonleaf": 1, "tlbi_asid": 1, "tlbi_all": 0}
    assert audit(m) == []


def test_a_full_gather_flushes_midway():
    """48M of small pages: the gather's batches hold 9678 pages; the zap flushes when
    they are full and again at tlb_end_vma (both ASID flushes), then 24 PTE tables
    need one VAE1IS per 2 MiB stride."""
    cap = MMU_GATHER_BUNDLE - 1 + MAX_GATHER_BATCH_COUNT * (MAX_GATHER_BATCH - 1)
    assert cap == 9678
    m = machine("256M")
    p = proc(m)
    flags = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED | mm_.MAP_POPULATE
    region(p, T, 48 * M, flags=flags)
    got = flushes(m, lambda: p.munmap(T, 48 * M))
    assert got == {"tlbi_va": 24, "tlbi_va_nonleaf": 24, "tlbi_asid": 2, "tlbi_all": 0}
    assert audit(m) == []


def test_exit_flushes_the_asid_once():
    m = machine("256M")
    p = Process.create(m)
    region(p, T, 48 * M)
    p.touch_range(T, 48 * M, write=True)
    region(p, 2 * T, 4 * M)
    p.touch_range(2 * T, 4 * M, stride=64 * K4, write=True)
    got = flushes(m, p.exit)
    assert got == {"tlbi_va": 0, "tlbi_va_nonleaf": 0, "tlbi_asid": 1, "tlbi_all": 0}
    assert audit(m) == []


def test_madv_dontneed_flushes_the_cleared_pages_last_level():
    m = machine("256M")
    p = proc(m, pt_reclaim=False)
    region(p, T, 4 * M)
    for a in (T, T + K4, T + 2 * K4):
        p.touch(a, write=True)
    got = flushes(m, lambda: p.madvise(T, 4 * M, madvise_mod.MADV_DONTNEED))
    assert got == {"tlbi_va": 3, "tlbi_va_nonleaf": 0, "tlbi_asid": 0, "tlbi_all": 0}
    assert p.pt_pages() == 3
    p.touch(T)  # faults again: the zero page now, not the stale entry
    assert p.read_byte(T) == 0
    assert audit(m) == []


def test_madv_dontneed_with_pt_reclaim_flushes_the_walk_cache():
    """PT_RECLAIM frees the PTE table (pte_free_tlb): the same 3 pages, non-last-level."""
    m = machine("256M")
    p = proc(m, pt_reclaim=True)
    region(p, T, 4 * M)
    for a in (T, T + K4, T + 2 * K4):
        p.touch(a, write=True)
    got = flushes(m, lambda: p.madvise(T, 4 * M, madvise_mod.MADV_DONTNEED))
    assert got == {"tlbi_va": 3, "tlbi_va_nonleaf": 3, "tlbi_asid": 0, "tlbi_all": 0}
    assert p.pt_pages() == 2
    assert audit(m) == []


def test_madv_dontneed_of_an_untouched_range_flushes_nothing():
    m = machine("256M")
    p = proc(m, pt_reclaim=False)
    region(p, T, 4 * M)
    got = flushes(m, lambda: p.madvise(T, 4 * M, madvise_mod.MADV_DONTNEED))
    assert got == {"tlbi_va": 0, "tlbi_va_nonleaf": 0, "tlbi_asid": 0, "tlbi_all": 0}
