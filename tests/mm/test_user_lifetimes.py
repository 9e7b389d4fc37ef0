"""Table lifetimes: munmap (rule 3), MADV_DONTNEED (rule 4), mprotect (rule 5), mremap (rule 6)."""

from __future__ import annotations

import errno

import pytest

from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import SegmentationFault, SyscallError

from .user_rig import K4, G, M, T, machine, proc, region


@pytest.fixture(scope="module")
def m():
    return machine("2G")


def _dense(p, a, n):
    p.touch_range(a, n, K4, write=True)


def test_fixed_noreplace_over_a_mapping_is_eexist(m):
    """MAP_FIXED_NOREPLACE over an existing mapping fails with EEXIST."""
    p = proc(m)
    region(p, 16 * T, 4 * M)
    with pytest.raises(SyscallError) as e:
        region(p, 16 * T + 2 * M, 4 * M)
    assert e.value.errno == errno.EEXIST
    p.exit()


def test_munmap_partial_pte_slot_keeps_the_table(m):
    """Unmapping part of a 2M slot whose rest is still mapped keeps the PTE table."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M)
    _dense(p, a, 2 * M)
    assert p.pt_pages() == 3
    p.munmap(a, M)
    assert p.pt_pages() == 3  # the empty half still overlaps the VMA
    p.munmap(a + M, M)
    assert p.pt_pages() == 0
    p.exit()


def test_munmap_whole_slots_frees_only_those(m):
    """Whole 2M slots unmapped lose their PTE tables; PMD/PUD stay while a VMA overlaps."""
    p = proc(m)
    a = region(p, 16 * T, 8 * M)
    _dense(p, a, 8 * M)
    assert p.pt_pages() == 4 + 1 + 1
    p.munmap(a + 2 * M, 4 * M)
    assert p.pt_pages() == 2 + 1 + 1
    p.exit()


def test_munmap_unaligned_neighbours_keep_shared_slots(m):
    """Floor and ceiling: the slots shared with the previous and next VMA survive."""
    p = proc(m)
    lo = region(p, 16 * T, 3 * M)
    mid = region(p, 16 * T + 3 * M, 4 * M)
    hi = region(p, 16 * T + 7 * M, 3 * M)
    for a, n in ((lo, 3 * M), (mid, 4 * M), (hi, 3 * M)):
        p.touch_range(a, n, 256 * K4, write=True)
    assert p.pt_pages() == 5 + 1 + 1
    p.munmap(mid, 4 * M)  # slots 1 and 3 shared with lo/hi: only slot 2 freed
    assert p.pt_pages() == 4 + 1 + 1
    p.exit()


def test_munmap_pmd_level(m):
    """A PMD table goes when no VMA overlaps its 1G slot; the PUD stays while one does."""
    p = proc(m)
    a = region(p, 16 * T, G)
    b = region(p, 16 * T + 2 * G, G)
    p.touch(a, write=True)
    p.touch(b, write=True)
    assert p.pt_pages() == 2 + 2 + 1
    p.munmap(b, G)
    assert p.pt_pages() == 1 + 1 + 1
    p.munmap(a + G // 2, G // 2)  # part of the 1G slot: the PMD table stays
    assert p.pt_pages() == 3
    p.exit()


def test_munmap_pud_level(m):
    """A PUD table goes only when its whole 512G slot is free of VMAs."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M)
    b = region(p, 16 * T + 256 * G, 2 * M)
    c = region(p, 17 * T, 2 * M)
    for x in (a, b, c):
        p.touch(x, write=True)
    assert p.pt_pages() == 3 + 3 + 2
    p.munmap(b, 2 * M)
    assert p.pt_pages() == 2 + 2 + 2
    p.munmap(a, 2 * M)
    assert p.pt_pages() == 3
    p.exit()


@pytest.mark.parametrize("reclaim", [True, False])
def test_madv_dontneed_whole_and_partial_slots(m, reclaim):
    """DONTNEED frees PTE tables of slots wholly inside the range with pt_reclaim, never PMD/PUD."""
    p = proc(m, pt_reclaim=reclaim)
    p.ctx.pt_reclaim = reclaim
    a = region(p, 16 * T, 8 * M)
    _dense(p, a, 8 * M)
    before_anon = p.mm.rss_anon
    p.madvise(a + M, 6 * M, madv.MADV_DONTNEED)  # slots 1 and 2 whole; 0 and 3 partial
    assert p.mm.rss_anon == before_anon - 6 * M // K4
    assert p.pt_pages() == (4 - 2 if reclaim else 4) + 2
    p.madvise(a, 8 * M, madv.MADV_DONTNEED)
    assert p.pt_pages() == (0 if reclaim else 4) + 2
    assert p.check_tree() == []
    p.ctx.pt_reclaim = True
    p.exit()


def test_madv_dontneed_on_small_range_never_frees(m):
    """A DONTNEED shorter than 2M frees no table even with pt_reclaim."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M)
    _dense(p, a, 2 * M)
    p.madvise(a, 2 * M - K4, madv.MADV_DONTNEED)
    assert p.pt_pages() == 3
    p.exit()


@pytest.mark.parametrize("prot", [mm_.PROT_NONE, mm_.PROT_READ])
def test_mprotect_keeps_counts_and_blocks_writes_at_el0(m, prot):
    """mprotect never changes the table count; afterwards writes fault at EL0."""
    p = proc(m)
    a = region(p, 16 * T, 4 * M)
    _dense(p, a, 3 * M)
    before = p.pt_pages()
    p.mprotect(a + M, 2 * M, prot)
    assert p.pt_pages() == before
    p.touch(a, write=True)
    with pytest.raises(SegmentationFault):
        p.touch(a + M, write=True)
    p.mprotect(a, 4 * M, mm_.PROT_READ | mm_.PROT_WRITE)
    assert p.pt_pages() == before
    p.touch(a + M, write=True)
    assert p.read_byte(a + M) == 0xA5
    p.exit()


def test_mremap_move_frees_source_by_rule_3(m):
    """A moved mapping's destination gets its tables; the source's go by rule 3."""
    p = proc(m)
    a = region(p, 16 * T + 4 * K4, 4 * M)  # unaligned: entries are copied
    _dense(p, a, 4 * M)
    assert p.pt_pages() == 3 + 1 + 1
    new = p.mremap(a, 4 * M, 4 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 32 * T + 8 * K4)
    assert new == 32 * T + 8 * K4
    assert p.pt_pages() == 3 + 1 + 1
    assert p.read_byte(new + 5 * K4) == 0xA5
    assert p.check_tree() == []
    p.exit()


def test_mremap_aligned_relinks_tables(m):
    """An aligned 2M move relinks the PTE tables: none allocated or freed, same count."""
    p = proc(m)
    a = region(p, 16 * T, 4 * M)
    _dense(p, a, 4 * M)
    allocs = p.ctx.k.counters["pgtable_alloc"]
    new = p.mremap(a, 4 * M, 4 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 16 * T + 64 * M)
    assert p.ctx.k.counters["pgtable_alloc"] == allocs
    assert p.pt_pages() == 2 + 1 + 1
    assert p.read_byte(new + 3 * M) == 0xA5
    p.exit()


def test_mremap_shrink_and_grow(m):
    """Shrinking unmaps the tail (rule 3); growing in place adds no table."""
    p = proc(m)
    a = region(p, 16 * T, 8 * M)
    _dense(p, a, 8 * M)
    assert p.mremap(a, 8 * M, 4 * M) == a
    assert p.pt_pages() == 2 + 2
    assert p.mremap(a, 4 * M, 6 * M) == a
    assert p.pt_pages() == 4
    p.exit()


def test_brk_grows_and_shrinks(m):
    """brk extends the heap VMA and shrinking it frees tables as munmap does."""
    p = proc(m)
    start = p.mm.start_brk
    p.brk(start + 4 * M)
    p.touch_range(start, 4 * M, 2 * M, write=True)
    assert p.pt_pages() == 2 + 1 + 1
    p.brk(start)
    assert p.pt_pages() == 0
    p.exit()
