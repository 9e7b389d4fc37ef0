"""THPs are order-9 folios: one compound allocation, freed as one order-9 block when
the last of their subpages is unmapped; split PMDs leave the folio whole; fork and
zap count PTEs and folio batches as copy_present_ptes/zap_present_ptes do."""

from __future__ import annotations

from kpsim.audit.invariants import audit
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import memory
from kpsim.mm import mmap as mm_
from kpsim.mm.folio import is_thp_folio

from .user_rig import K4, RW, M, T, machine, proc, region

KEYS = (
    "page_alloc.alloc_order_9",
    "page_alloc.free_order_9",
    "page_alloc.clear_page",
    "thp_split_pmd",
    "fork_pte_copy",
    "fork_folio",
    "zap_pte",
    "zap_folio",
)


def delta(m, fn) -> dict[str, int]:
    before = m.counters.snapshot()
    fn()
    d = m.counters.since(before)
    return {k: d.get(k, 0) for k in KEYS}


def thp_proc(m, **kw):
    p = proc(m, **kw)
    region(p, T, 4 * M)
    p.madvise(T, 4 * M, madvise_mod.MADV_HUGEPAGE)
    return p


def head_of(p, addr: int) -> int:
    return p.ctx.arch.pte_pfn(p.ctx.k.mem.read64(_pmd_pa(p, addr)))


def _pmd_pa(p, addr: int) -> int:
    tpa = memory.table_pa(p.mm, 2, addr)
    return tpa + (memory.entry_index(2, addr) << 3)


def test_a_thp_fault_is_one_order9_allocation_cleared_page_by_page():
    m = machine("256M")
    p = thp_proc(m)
    d = delta(m, lambda: p.touch(T, write=True))
    assert d["page_alloc.alloc_order_9"] == 1
    # clear_huge_page: one per subpage; plus the new (zeroed) PUD, PMD and deposit tables
    assert d["page_alloc.clear_page"] == 512 + p.pt_pages() == 512 + 3
    head = head_of(p, T)
    pa = m.k.page_alloc
    assert pa.compound_order(head) == 9 and pa.page_order(head) == 9
    assert pa.page_order(head + 1) is None  # not split into order-0 pages
    assert is_thp_folio(p.ctx, head)
    assert audit(m) == []


def test_munmap_of_a_pmd_mapped_thp_frees_one_order9_block():
    m = machine("256M")
    p = thp_proc(m)
    p.touch(T, write=True)
    head = head_of(p, T)
    d = delta(m, lambda: p.munmap(T, 2 * M))
    assert d["page_alloc.free_order_9"] == 1
    assert d["zap_folio"] == 1 and d["zap_pte"] == 0
    assert m.k.page_alloc.is_free(head)
    assert audit(m) == []


def test_partial_munmap_splits_the_pmd_and_keeps_the_folio_until_its_last_page_goes():
    m = machine("256M")
    p = thp_proc(m)
    p.touch(T, write=True)
    head = head_of(p, T)
    pa = m.k.page_alloc
    d = delta(m, lambda: p.munmap(T, K4))
    assert d["thp_split_pmd"] == 1 and d["page_alloc.free_order_9"] == 0
    assert d["zap_pte"] == 1 and d["zap_folio"] == 1
    assert pa.is_allocated(head) and pa.compound_order(head) == 9
    assert p.ctx.mapcount[head - p.ctx.base_pfn] == 0
    assert audit(m) == []
    d = delta(m, lambda: p.munmap(T + K4, 2 * M - K4))
    # 511 PTEs of one folio in one table: one batch; the folio goes as one block
    assert d["zap_pte"] == 511 and d["zap_folio"] == 1
    assert d["page_alloc.free_order_9"] == 1
    assert pa.is_free(head)
    assert audit(m) == []


def test_dontneed_of_half_a_thp_keeps_the_folio():
    m = machine("256M")
    p = thp_proc(m, pt_reclaim=False)
    p.touch(T, write=True)
    head = head_of(p, T)
    d = delta(m, lambda: p.madvise(T, M, madvise_mod.MADV_DONTNEED))
    assert d["thp_split_pmd"] == 1 and d["page_alloc.free_order_9"] == 0
    assert d["zap_pte"] == 256 and d["zap_folio"] == 1
    assert m.k.page_alloc.is_allocated(head)
    d = delta(m, lambda: p.madvise(T + M, M, madvise_mod.MADV_DONTNEED))
    assert d["page_alloc.free_order_9"] == 1
    assert audit(m) == []


def test_fork_of_a_pte_mapped_thp_copies_512_ptes_as_one_folio_batch():
    m = machine("256M")
    p = thp_proc(m)
    p.touch(T, write=True)
    head = head_of(p, T)
    p.mprotect(T + K4, K4, mm_.PROT_READ)  # splits the PMD (cow.c "PTE-mapped THP")
    p.mprotect(T + K4, K4, RW)
    children = []
    d = delta(m, lambda: children.append(p.fork()))
    assert d["fork_pte_copy"] == 512 and d["fork_folio"] == 1
    child = children[0]
    d = delta(m, child.exit)
    assert d["zap_pte"] == 512 and d["zap_folio"] == 1
    assert d["page_alloc.free_order_9"] == 0  # the parent still maps it
    d = delta(m, lambda: p.munmap(T, 4 * M))
    assert d["page_alloc.free_order_9"] == 1
    assert m.k.page_alloc.is_free(head)
    assert audit(m) == []


def test_fork_of_small_folios_counts_one_batch_per_page():
    m = machine("256M")
    p = proc(m)
    region(p, T, 4 * M)
    p.touch_range(T, 64 * K4, write=True)
    children = []
    d = delta(m, lambda: children.append(p.fork()))
    assert d["fork_pte_copy"] == 64 and d["fork_folio"] == 64
    p.touch(T + 100 * K4)  # a read fault: the zero page is no folio
    d = delta(m, lambda: children.append(p.fork()))
    assert d["fork_pte_copy"] == 65 and d["fork_folio"] == 64


def test_cow_of_a_shared_pmd_mapped_thp_frees_the_old_folio_when_the_child_goes():
    m = machine("256M")
    p = thp_proc(m)
    p.touch(T, write=True)
    old = head_of(p, T)
    child = p.fork()
    d = delta(m, lambda: p.touch(T, write=True))
    assert d["page_alloc.alloc_order_9"] == 1 and d["page_alloc.free_order_9"] == 0
    assert head_of(p, T) != old
    d = delta(m, child.exit)
    assert d["page_alloc.free_order_9"] == 1 and d["zap_folio"] == 1
    assert m.k.page_alloc.is_free(old)
    assert audit(m) == []
