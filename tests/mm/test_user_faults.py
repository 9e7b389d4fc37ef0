"""Page faults and table allocation (pt-lifecycle.md rules 1 and 2, §7.2 S1-S4)."""

from __future__ import annotations

import pytest

from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import SegmentationFault
from kpsim.mm.process import Process

from .user_rig import K4, RW, G, M, T, machine, proc, region


@pytest.fixture(scope="module")
def m():
    return machine("4G")


def test_mmap_allocates_no_table(m):
    """mmap alone allocates no page table (rule 1)."""
    p = proc(m)
    region(p, 16 * T, G)
    assert p.pt_pages() == 0
    p.exit()


def test_steps_s1_to_s4(m):
    """S1-S4 of §7.2 give +514, +33, +1025 and +513 (kernel placement beside the stack)."""
    p = Process.create(m)
    b = p.pt_pages()
    r1 = region(p, 16 * T, G)
    p.touch_range(r1, G, 2 * M, write=True)
    assert p.pt_pages() - b == 514
    b = p.pt_pages()
    r2 = region(p, 16 * T + G, 64 * M)
    p.touch_range(r2, 64 * M, K4, write=True)
    assert p.pt_pages() - b == 33
    b = p.pt_pages()
    r3 = region(p, 32 * T, 512 * G)
    p.touch_range(r3, 512 * G, G, write=True)
    assert p.pt_pages() - b == 1025
    b = p.pt_pages()
    r4 = p.mmap(None, G, RW)
    assert r4 % (2 * M) == 0
    p.touch_range(r4, G, 2 * M, write=True)
    assert p.pt_pages() - b == 513
    assert p.check_tree() == []
    p.exit()


def test_read_fault_maps_zero_page(m):
    """A read fault on anonymous memory maps the shared zero page, allocating the tables."""
    p = proc(m)
    a = region(p, 16 * T, 4 * M)
    p.touch(a)
    p.touch(a + 2 * M + K4)
    assert p.pt_pages() == 2 + 1 + 1
    assert p.mm.rss_anon == 0
    assert p.mm.vmas[0].anon_vma is None
    assert p.read_byte(a) == 0
    p.touch(a, write=True)  # COW from the zero page
    assert p.mm.rss_anon == 1 and p.read_byte(a) == 0xA5
    p.exit()


def test_writes_fault_at_el0_without_write_permission(m):
    """A write to a read-only mapping is stopped by the MMU at EL0 and is a SIGSEGV."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M, prot=mm_.PROT_READ)
    p.touch(a)
    with pytest.raises(SegmentationFault):
        p.touch(a, write=True)
    p.exit()


def test_thp_fault_deposits_a_counted_pte_table(m):
    """A write fault in a MADV_HUGEPAGE region maps a 2M block PMD plus a deposited table."""
    p = proc(m)
    a = region(p, 16 * T, 8 * M)
    p.madvise(a, 8 * M, madv.MADV_HUGEPAGE)
    p.touch(a, write=True)
    p.touch(a + 2 * M + 5 * K4)  # read: huge zero page, also with a deposit
    assert p.pt_pages() == 1 + 1 + 2  # PUD + PMD + 2 deposited
    assert len(p.mm.thp) == 2 and not p.mm.tables[3]
    assert p.mm.rss_anon == 512
    assert p.check_tree() == []
    p.madvise(a, 4 * M, madv.MADV_DONTNEED)  # zapping a THP frees its deposit (rule 2)
    assert p.pt_pages() == 2
    p.exit()


def test_thp_needs_the_whole_slot_inside_the_vma(m):
    """A 2M slot only partly inside the VMA falls back to 4K pages and a PTE table."""
    p = proc(m)
    a = region(p, 16 * T + M, 4 * M)
    p.madvise(a, 4 * M, madv.MADV_HUGEPAGE)
    p.touch(a, write=True)  # slot [16T, 16T+2M) is half outside
    p.touch(a + M, write=True)  # slot [16T+2M, 16T+4M) is inside
    assert len(p.mm.thp) == 1 and len(p.mm.tables[3]) == 1
    p.exit()


def test_file_private_and_shared_faults(m):
    """File faults map the page-cache page; a private write copies it, a shared one does not."""
    p = proc(m)
    f = p.ctx.new_file(8 * K4)
    a = p.mmap(None, 8 * K4, RW, mm_.MAP_PRIVATE, file=f)
    b = p.mmap(None, 8 * K4, RW, mm_.MAP_SHARED, file=f)
    p.touch(a)
    p.touch(b, write=True)
    assert p.read_byte(a) == 0xA5  # the shared write is visible through the cache page
    p.touch(a + K4, write=True)
    assert p.mm.rss_anon == 1 and p.mm.rss_file == 2
    va = next(v for v in p.mm.vmas if v.start == a)
    vb = next(v for v in p.mm.vmas if v.start == b)
    assert va.anon_vma is not None and vb.anon_vma is None
    p.exit()
