"""Rules found by running steps against the host kernel (Linux 6.18): VM_ACCOUNT,
anon_vma reuse and page offsets in merges, PROT_NONE population, THP-aligned placement
of mremap moves and not of shared anonymous memory, MADV_WIPEONFORK/MADV_DONTFORK, and
a process built from a snapshot.
Each has a negative control: the same operation where the rule does not apply."""

from __future__ import annotations

import pytest

from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import VmFlags
from kpsim.mm.process import mm_context
from kpsim.workloads.simtarget import model_pt_pages_for_snapshot, process_from_snapshot
from kpsim.workloads.snapshot import Snapshot, Vma

from .user_rig import FIXED, K4, RW, M, T, machine, proc, region

ACCOUNTED = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED_NOREPLACE  # no NORESERVE
ANON = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS


@pytest.fixture(scope="module")
def m():
    return machine("1G")


@pytest.mark.parametrize("written", [True, False])
def test_mprotect_read_only_keeps_vm_account_only_with_an_anon_vma(m, written):
    """mprotect_fixup: a written (anon_vma) accounted VMA made read-only keeps VM_ACCOUNT
    and does not merge with an unaccounted read-only neighbour, so DONTNEED over the
    shared slot frees nothing; never written, it drops VM_ACCOUNT and merges: the whole
    slot lies in one VMA and PT_RECLAIM frees its table (the control)."""
    p = proc(m, pt_reclaim=True)
    b = p.mmap(16 * T, M, RW, ACCOUNTED)
    p.mmap(16 * T + M, M, mm_.PROT_READ, ACCOUNTED)
    if written:
        p.touch(b, write=True)
    p.mprotect(b, M, mm_.PROT_READ)
    p.touch_range(b, 2 * M, M)
    assert len(p.mm.vmas) == (2 if written else 1)
    assert bool(p.mm.vmas[0].flags & VmFlags.ACCOUNT) == written
    before = p.pt_pages()
    p.madvise(b, 2 * M, madv.MADV_DONTNEED)
    assert p.pt_pages() == before - (0 if written else 1)
    p.exit()


def test_mprotect_writable_charges_vm_account(m):
    """A private read-only mapping made writable gains VM_ACCOUNT (and merges with an
    accounted writable neighbour); with MAP_NORESERVE it does not (control)."""
    p = proc(m)
    p.mmap(16 * T, M, RW, ACCOUNTED)
    r = p.mmap(16 * T + M, M, mm_.PROT_READ, ACCOUNTED)
    n = p.mmap(16 * T + 4 * M, M, mm_.PROT_READ, FIXED)
    p.mprotect(r, M, RW)
    p.mprotect(n, M, RW)
    assert [v.end - v.start for v in p.mm.vmas] == [2 * M, M]
    assert p.mm.vmas[0].flags & VmFlags.ACCOUNT
    assert not p.mm.vmas[1].flags & VmFlags.ACCOUNT
    p.exit()


@pytest.mark.parametrize(("prot", "tables"), [(mm_.PROT_NONE, 0), (mm_.PROT_READ, 4)])
def test_map_populate_skips_prot_none(m, prot, tables):
    """MAP_POPULATE of a PROT_NONE mapping faults nothing (GUP fails, the error is
    ignored): no table; the same populate of a readable mapping builds them."""
    p = proc(m)
    p.mmap(16 * T, 4 * M, prot, FIXED | mm_.MAP_POPULATE)
    assert p.pt_pages() == tables
    p.exit()


def test_mremap_move_is_thp_aligned_like_mmap(m):
    """mremap's kernel-chosen destination for a private anonymous length that is a
    multiple of 2 MiB is THP-aligned; a length that is not is placed unaligned (control)."""
    p = proc(m)
    p.mmap(None, 64 << 10, RW, ANON)  # leave the top of the mmap area unaligned
    a = region(p, 16 * T, 3 * M)
    region(p, 16 * T + 3 * M, K4)  # blocks growth in place
    moved = p.mremap(a, 3 * M, 4 * M)
    assert moved != a and moved % (2 * M) == 0
    b = region(p, 16 * T + 8 * M, 3 * M)
    region(p, 16 * T + 11 * M, K4)
    grown = p.mremap(b, 3 * M, 3 * M + 64 * K4)
    assert grown != b and grown % (2 * M) != 0
    p.exit()


def test_shared_anonymous_mmap_is_not_thp_aligned(m):
    """Shared anonymous memory is placed by shmem (no THP alignment with shmem THP off);
    the private mapping of the same length is aligned (control)."""
    p = proc(m)
    p.mmap(None, 64 << 10, RW, ANON)
    shared = p.mmap(None, 4 * M, RW, mm_.MAP_SHARED | mm_.MAP_ANONYMOUS)
    private = p.mmap(None, 4 * M, RW, ANON)
    assert shared % (2 * M) != 0
    assert private % (2 * M) == 0
    p.exit()


@pytest.mark.parametrize(
    ("advice", "child_vmas", "child_tables"),
    [
        (madv.MADV_WIPEONFORK, 1, 0),
        (madv.MADV_DONTFORK, 0, 0),
        (madv.MADV_DOFORK, 1, 3),  # control: an ordinary written private VMA is copied
    ],
)
def test_wipeonfork_and_dontfork(m, advice, child_vmas, child_tables):
    """dup_mmap: VM_DONTCOPY VMAs are not in the child; VM_WIPEONFORK ones are, with no
    tables and no anon_vma."""
    p = proc(m)
    a = region(p, 16 * T, 2 * M)
    p.touch(a, write=True)
    p.madvise(a, 2 * M, advice)
    c = p.fork()
    assert len(c.mm.vmas) == child_vmas
    assert c.pt_pages() == child_tables
    if child_vmas:
        assert (c.mm.vmas[0].anon_vma is None) == (advice == madv.MADV_WIPEONFORK)
    c.exit()
    p.exit()


def test_wipeonfork_refuses_shared_memory(m):
    p = proc(m)
    a = p.mmap(16 * T, 2 * M, RW, mm_.MAP_SHARED | mm_.MAP_ANONYMOUS | mm_.MAP_FIXED)
    with pytest.raises(OSError):
        p.madvise(a, 2 * M, madv.MADV_WIPEONFORK)
    p.exit()


def _snap(vmas, present, smaps=()):
    return Snapshot(1, "x86_64", 0, tuple(vmas), tuple(present), "test", "stopped", smaps)


LIB = 0x7F12_3458_0000
STACK = 0x7FFF_F000_0000


def test_process_from_snapshot_has_the_present_pages_tables_and_layout(m):
    """The model copy has the tables the present pages imply and places the next
    kernel-chosen mapping right below the lowest library, as the live process would."""
    vmas = [
        Vma(LIB, LIB + 0x3000, "r--p", 0, "/lib/x.so"),
        Vma(LIB + 0x3000, LIB + 0x5000, "rw-p", 0, ""),
        Vma(LIB + 0x5000, LIB + 0x6000, "---p", 0, ""),
        Vma(STACK, STACK + 0x21000, "rw-p", 0, "[stack]"),
    ]
    present = [
        (LIB, LIB + 0x2000),
        (LIB + 0x3000, LIB + 0x4000),
        (STACK + 0x20000, STACK + 0x21000),
    ]
    smaps = (("rd mr mw me", 0), ("rd wr mr mw me ac", 4), ("mr mw me", 0), ("rd wr gd ac", 4))
    snap = _snap(vmas, present, smaps)
    p = process_from_snapshot(mm_context(m.k, m.arch), snap)
    assert p.pt_pages() == 2 + 2 + 2  # two 2M slots, two 1G slots, two 512G slots
    assert [v.anon_vma is not None for v in p.mm.vmas] == [False, True, False, True]
    assert p.mm.vmas[3].flags & VmFlags.GROWSDOWN
    placed = p.mmap(None, 64 << 10, RW, ANON)
    assert placed == LIB - (64 << 10)
    p.touch(placed, write=True)
    assert p.pt_pages() == 6  # the library's 2 MiB slot already has its table
    p.exit()
    assert model_pt_pages_for_snapshot(snap) == 6


def test_fault_reuses_a_compatible_neighbours_anon_vma(m):
    """find_mergeable_anon_vma: B (rwx) faulted next to A (rw, written) takes A's
    anon_vma, so mprotect(B, rw) merges them and DONTNEED frees the whole slot."""
    p = proc(m, pt_reclaim=True)
    a = region(p, 16 * T, M)
    p.touch(a, write=True)
    b = region(p, 16 * T + M, M, prot=RW | mm_.PROT_EXEC)
    p.touch(b, write=True)
    assert p.mm.vmas[0].anon_vma == p.mm.vmas[1].anon_vma
    p.mprotect(b, M, RW)
    assert len(p.mm.vmas) == 1
    before = p.pt_pages()
    p.madvise(a, 2 * M, madv.MADV_DONTNEED)
    assert p.pt_pages() == before - 1
    p.exit()


def test_no_anon_vma_reuse_across_a_gap(m):
    """Control: with a page's gap between them, B gets an anon_vma of its own."""
    p = proc(m)
    a = region(p, 16 * T, M)
    p.touch(a, write=True)
    b = region(p, 16 * T + M + K4, M)
    p.touch(b, write=True)
    assert p.mm.vmas[0].anon_vma != p.mm.vmas[1].anon_vma
    p.exit()


@pytest.mark.parametrize("moved", [True, False])
def test_mremap_keeps_the_page_offset_so_neighbours_do_not_merge(m, moved):
    """An anonymous VMA's pgoff is the address it was mapped at and mremap keeps it: a
    new mapping right above the moved VMA does not merge with it, and DONTNEED over
    their shared slot frees nothing; the control (mapped in place) merges and frees."""
    p = proc(m, pt_reclaim=True)
    c = region(p, 32 * T if moved else 48 * T, M)
    p.touch(c, write=True)
    if moved:
        c = p.mremap(c, M, M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 48 * T)
    region(p, 48 * T + M, M)
    assert len(p.mm.vmas) == (2 if moved else 1)
    before = p.pt_pages()
    p.madvise(48 * T, 2 * M, madv.MADV_DONTNEED)
    assert p.pt_pages() == before - (0 if moved else 1)
    p.exit()


def test_mremap_fixed_moves_several_vmas_and_keeps_the_gaps(m):
    """Linux 6.17+: MREMAP_FIXED with an unchanged length moves every VMA of the range
    (gaps kept); growing such a range is EFAULT (control), as is a start in a gap."""
    p = proc(m)
    region(p, 16 * T, M)
    region(p, 16 * T + 3 * M, M, prot=mm_.PROT_READ)
    p.touch(16 * T, write=True)
    moved = p.mremap(16 * T, 4 * M, 4 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 32 * T)
    assert moved == 32 * T
    assert [(v.start - 32 * T, v.end - 32 * T) for v in p.mm.vmas] == [(0, M), (3 * M, 4 * M)]
    assert p.pt_pages() == 3
    with pytest.raises(OSError) as e:
        p.mremap(32 * T, 4 * M, 5 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 48 * T)
    assert e.value.errno == 14
    with pytest.raises(OSError) as e:
        p.mremap(32 * T + M, 3 * M, 3 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 48 * T)
    assert e.value.errno == 14
    p.exit()


def test_mremap_same_length_without_fixed_is_a_no_op_even_over_two_vmas(m):
    p = proc(m)
    region(p, 16 * T, M)
    region(p, 16 * T + M, M, prot=mm_.PROT_READ)
    assert p.mremap(16 * T, 2 * M, 2 * M) == 16 * T
    assert len(p.mm.vmas) == 2
    p.exit()


def test_multi_vma_move_unmaps_each_destination_piece_only(m):
    """A mapping at the destination of a gap survives the move, and the per-piece
    unmaps keep the slot that mapping still overlaps (one unmap of the whole
    destination, the control below, frees it)."""
    p = proc(m, pt_reclaim=True)
    d = region(p, 48 * T, 8 * M)
    p.touch_range(d, 8 * M, M, write=True)
    region(p, 16 * T, M, prot=mm_.PROT_READ)
    region(p, 16 * T + 2 * M, M, prot=mm_.PROT_READ)
    before = p.pt_pages()
    p.mremap(16 * T, 3 * M, 3 * M, mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED, 48 * T + M)
    assert p.mm.find_vma(48 * T + 2 * M).flags & VmFlags.WRITE  # D's piece in the gap
    assert p.pt_pages() == before
    p.munmap(48 * T + M, 3 * M)  # control: one unmap of [1M, 4M) frees slot 1
    assert p.pt_pages() == before - 1
    p.exit()
