"""fork (rule 7), exec (rule 8) and exit (rule 9), with the buddy audit balancing."""

from __future__ import annotations

import pytest

from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.process import Process, mm_context

from .user_rig import K4, RW, G, M, T, machine, proc, region


@pytest.fixture(scope="module")
def m():
    return machine("2G")


def test_fork_skeleton_copies_tables_including_empty_ones(m):
    """The child gets every table the parent has over anon_vma VMAs, empty ones too."""
    p = proc(m)
    a = region(p, 16 * T, 8 * M)
    p.touch_range(a, 8 * M, 2 * M, write=True)
    p.madvise(a + 2 * M, 2 * M, madv.MADV_DONTNEED)  # reclaimed: slot 1 has no table
    p.munmap(a + 4 * M, K4)  # partial: slot 2 keeps its (now partly empty) table
    p.madvise(a + 6 * M, K4, madv.MADV_DONTNEED)  # slot 3 table stays, empty
    assert p.pt_pages() == 3 + 2
    c = p.fork()
    assert c.pt_pages() == p.pt_pages() == 5
    assert c.check_tree() == []
    c.exit()
    p.exit()


def test_fork_skips_vmas_without_anon_vma(m):
    """Read-only-touched (zero page) and shared VMAs are not copied: the child refaults."""
    p = proc(m)
    z = region(p, 16 * T, 4 * M)
    p.touch_range(z, 4 * M, 2 * M)  # zero page only: no anon_vma
    sh = p.mmap(32 * T, 2 * M, RW, mm_.MAP_SHARED | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED)
    p.touch(sh, write=True)
    w = region(p, 48 * T, 2 * M)
    p.touch(w, write=True)
    assert p.pt_pages() == 4 + 3 + 3
    c = p.fork()
    assert c.pt_pages() == 3
    c.touch(z)  # refault in the child
    assert c.pt_pages() == 6
    c.exit()
    p.exit()


def test_fork_cow_keeps_parent_and_child_apart(m):
    """After fork both sides are write-protected; each write copies, and data stays private."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M)
    p.touch(a, write=True, value=0x11)
    c = p.fork()
    assert c.read_byte(a) == 0x11
    c.touch(a, write=True, value=0x22)
    assert p.read_byte(a) == 0x11 and c.read_byte(a) == 0x22
    p.touch(a, write=True, value=0x33)  # now exclusive again: reused, not copied
    assert p.read_byte(a) == 0x33 and c.read_byte(a) == 0x22
    assert p.pt_pages() == c.pt_pages() == 3
    c.exit()
    p.exit()


def test_fork_thp_gets_a_child_deposit(m):
    """A PMD-mapped THP is copied with a new deposited PTE table in the child (+1)."""
    p = proc(m)
    a = region(p, 16 * T, 4 * M)
    p.madvise(a, 4 * M, madv.MADV_HUGEPAGE)
    p.touch(a, write=True)
    c = p.fork()
    assert c.pt_pages() == p.pt_pages() == 3
    c.touch(a + K4, write=True)
    assert c.pt_pages() == 3
    c.exit()
    p.exit()


def test_exit_frees_everything_and_audit_balances(m):
    """exit frees every table and page; free pages return to the count before the process."""
    mm_context(m.k, m.arch).drop_caches()
    free0 = m.k.page_alloc.nr_free_pages()
    tables0 = m.k.counters["PageTables"]
    p = Process.create(m)
    a = region(p, 16 * T, 64 * M)
    p.madvise(a + 32 * M, 32 * M, madv.MADV_HUGEPAGE)
    p.touch_range(a, 64 * M, 64 * K4, write=True)
    f = p.ctx.new_file(16 * K4)
    b = p.mmap(None, 16 * K4, RW, mm_.MAP_PRIVATE, file=f)
    p.touch_range(b, 16 * K4, K4)
    c = p.fork()
    c.touch(a, write=True)
    c.exit()
    p.exec("again")
    p.touch(p.mmap(None, 4 * M, RW), write=True)
    p.exit()
    p.ctx.drop_caches()
    assert m.k.page_alloc.nr_free_pages() == free0
    assert m.k.counters["PageTables"] == tables0
    assert m.k.page_alloc.audit() == []
    assert not any(i.owner.startswith("mm:") for i in m.k.pgtable.live.values())


def test_one_gib_touched_fork_and_exit_match():
    """A 1 GiB touched process forks and exits: tables allocated equal tables freed."""
    m = machine("4G")
    mm_context(m.k, m.arch)
    free0 = m.k.page_alloc.nr_free_pages()
    p = Process.create(m)
    a = p.mmap(None, G, RW)
    p.touch_range(a, G, K4, write=True)
    alloc0 = m.k.counters["pgtable_alloc"]
    c = p.fork()
    assert m.k.counters["pgtable_alloc"] - alloc0 == c.pt_pages() + 1  # + the child's PGD
    assert c.pt_pages() == p.pt_pages()
    c.exit()
    p.exit()
    assert m.k.counters["pgtable_alloc"] == m.k.counters["pgtable_free"] + _boot_tables(m)
    assert m.k.page_alloc.nr_free_pages() == free0
    assert m.k.page_alloc.audit() == []


def _boot_tables(m) -> int:
    return sum(1 for i in m.k.pgtable.live.values() if i.source == "pagetable_alloc")
