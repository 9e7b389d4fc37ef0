"""fork's address-space copy: ``dup_mm``/``dup_mmap`` (``kernel/fork.c``, ``mm/mmap.c``)
and ``copy_page_range`` (``mm/memory.c``).

Rule 7 of pt-lifecycle.md: only VMAs that ``vma_needs_copy`` (an ``anon_vma``) get
tables in the child, and for those the child gets a table at every level wherever the
parent has one over the VMA's range, empty ones included (a skeleton copy). Private
writable entries are write-protected in parent and child (COW); the child's entries
are old. A PMD-mapped THP is copied as a PMD plus a new deposited PTE table in the
child (``copy_huge_pmd``). Each PTE table is copied in one lazy-MMU section with
whole-table numpy operations. The parent's TLB is flushed once at the end.
``copy_pte_range`` counts ``fork_pte_copy`` per present PTE copied and
``fork_folio`` per folio batch (``copy_present_ptes``: ``folio_pte_batch`` +
``folio_try_dup_anon_rmap_ptes``; one per small folio, one per run of a PTE-mapped
THP within a table; the zero page is no folio); ``copy_huge_pmd`` counts one
``fork_folio`` per PMD-mapped THP.

VM_DONTCOPY VMAs are left out of the child; VM_WIPEONFORK ones are copied without
tables or anon_vma (``dup_mmap``).

Left out: userfaultfd, PFN maps, the anon_vma chain (the child's VMA
gets a fresh anon_vma identity), KSM, the mm's exe file and other non-VMA state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np

from kpsim.errors import OutOfMemory
from kpsim.mm import memory as m
from kpsim.mm.folio import folio_pte_batch_count, folio_pte_batches
from kpsim.mm.mm_types import (
    ANON,
    FILE,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SIZE,
    SPAN_SHIFT,
    ZERO,
    MmStruct,
    Vma,
    VmFlags,
)

_DONTCOPY: Final = int(VmFlags.DONTCOPY)
_WIPEONFORK: Final = int(VmFlags.WIPEONFORK)


def vma_needs_copy(vma: Vma) -> bool:
    return vma.anon_vma is not None


def dup_mm(parent: MmStruct, *, on_fail: Callable[[MmStruct], None] | None = None) -> MmStruct:
    """``dup_mm``: a new mm with the parent's VMAs, and tables copied for those that need
    it. When a copy runs out of memory (``OutOfMemory``, re-raised), the half-built
    child is handed to ``on_fail`` (``mmput`` -> ``exit_mmap``) first."""
    child = MmStruct(parent.ctx)
    try:
        dup_mmap(child, parent)
    except OutOfMemory:
        if on_fail is not None:
            on_fail(child)
        raise
    return child


def dup_mmap(child: MmStruct, parent: MmStruct) -> None:
    """``dup_mmap``: copy the VMAs (and their tables); the parent's TLB is flushed on
    the way out whether or not every copy succeeded (its PTEs may be write-protected)."""
    try:
        _dup_vmas(child, parent)
    finally:
        parent.ctx.arch.flush_tlb_mm(parent.asid)


def _dup_vmas(child: MmStruct, parent: MmStruct) -> None:
    child.mmap_base, child.start_brk, child.brk = parent.mmap_base, parent.start_brk, parent.brk
    for vma in parent.vmas:
        flags = int(vma.flags)  # plain ints: IntFlag arithmetic is slow
        if flags & _DONTCOPY:
            continue
        wipe = bool(flags & _WIPEONFORK)  # a clean slate: no anon_vma, no copy
        anon = parent.ctx.new_anon_vma() if vma.anon_vma is not None and not wipe else None
        child.insert_vma(Vma(vma.start, vma.end, vma.flags, vma.file, vma.pgoff, anon, vma.name))
        if vma_needs_copy(vma) and not wipe:
            copy_page_range(child, parent, vma)


def copy_page_range(dst: MmStruct, src: MmStruct, vma: Vma) -> None:
    """Copy every table and entry of ``src`` over ``vma`` into ``dst``."""
    s, e = vma.start, vma.end
    for level in (1, 2):
        sh = SPAN_SHIFT[level]
        for slot in m.slots_in(src.tables[level], s >> sh, (e - 1) >> sh):
            m.pxd_alloc(dst, level, max(s, slot << sh))
    for slot in m.slots_in(src.thp, s >> 21, (e - 1) >> 21) if src.thp else ():
        copy_huge_pmd(dst, src, vma, slot)
    slots = m.slots_in(src.tables[3], s >> 21, (e - 1) >> 21)
    if len(slots) > 1 and getattr(src.ctx.arch, "irq_hook", None) is None:
        copy_pte_tables(dst, src, vma, slots)
        return
    for slot in slots:
        copy_pte_range(dst, src, vma, slot)


def copy_huge_pmd(dst: MmStruct, src: MmStruct, vma: Vma, slot: int) -> None:
    ctx, arch = src.ctx, src.ctx.arch
    addr = slot << 21
    got = m.pmd_entry(src, addr)
    assert got is not None
    spa, v = got
    dpa = m.pxd_alloc(dst, 2, addr)  # copy_pmd_range's pmd_alloc comes first
    deposit = m.pte_alloc_one(dst, 3)  # pte_alloc_one for the child's deposit
    head = arch.pte_pfn(v)
    if head != ctx.huge_zero_pfn:
        pfns = head + np.arange(512, dtype=np.int64)
        ctx.k.counters["fork_folio"] += 1  # folio_try_dup_anon_rmap_pmd
        m.get_pages(ctx, pfns)
        m.rss_delta(dst, pfns, 1)
        if not vma.shared and arch.pte_write(v):
            v = arch.pte_wrprotect(v)
            arch.pt_store(m.entry_ptr(src, spa, 2, addr), v)  # pmdp_set_wrprotect
    dst.thp[slot] = deposit
    arch.pt_store(m.entry_ptr(dst, dpa, 2, addr), v & ~(1 << 10))  # pmd_mkold


def copy_pte_range(dst: MmStruct, src: MmStruct, vma: Vma, slot: int) -> None:
    """``copy_pte_range`` for one PTE table: the child's table exists even if empty."""
    ctx, arch = src.ctx, src.ctx.arch
    base = slot << 21
    dpa = m.pxd_alloc(dst, 3, max(vma.start, base))
    spa = src.tables[3][slot] << PAGE_SHIFT
    a = max(vma.start - base, 0) >> PAGE_SHIFT
    b = min(vma.end - base, PMD_SIZE) >> PAGE_SHIFT
    arr = arch.read_table(spa)[a:b]
    nz = arr.nonzero()[0]
    if nz.size == 0:
        return
    full = nz.size == arr.size  # every entry in range used: slices, no index arrays
    vals = arr.copy() if full else arr[nz]
    idx: Any = slice(a, b) if full else nz + a
    if nz.size > COPY_SMALL or not _account_small(dst, vals):
        present = arch.ptes_present(vals)
        allp = bool(present.all())
        pfns = arch.ptes_pfn(vals if allp else vals[present])
        pidx = nz if allp else nz[present]
        counters = ctx.k.counters
        counters["fork_pte_copy"] += int(pfns.size)
        counters["fork_folio"] += folio_pte_batch_count(ctx, pidx, pfns)  # copy_present_ptes
        m.get_pages(ctx, pfns)
        m.rss_delta(dst, pfns, 1)
    arch.arch_enter_lazy_mmu_mode()
    try:
        if not vma.shared:  # is_cow_mapping: write-protect both sides
            wmask = arch.ptes_write(vals)
            if bool(wmask.all()):
                vals = arch.ptes_wrprotect(vals)
                arch.pt_store_batch(spa, idx, vals)
            elif wmask.any():
                w = np.flatnonzero(wmask)
                vals[w] = arch.ptes_wrprotect(vals[w])
                arch.pt_store_batch(spa, nz[w] + a, vals[w])
        arch.pt_store_batch(dpa, idx, arch.ptes_mkold(vals))
    finally:
        arch.arch_leave_lazy_mmu_mode()


#: Tables with at most this many entries to copy are accounted by :func:`_account_small`.
COPY_SMALL = 48


def _account_small(dst: MmStruct, vals: Any) -> bool:
    """:func:`copy_pte_range`'s accounting of a few copied entries ``vals`` with Python
    scalars: ``fork_pte_copy``, ``fork_folio`` (each small folio a batch, the zero
    page none), the map counts and the child's RSS, as the whole-array calls do. False
    (nothing done) when a pfn lies in a THP frame: the general path handles it."""
    ctx, arch = dst.ctx, dst.ctx.arch
    present = arch.pte_present
    pte_pfn = arch.pte_pfn
    pfns = [pte_pfn(v) for v in vals.tolist() if present(v)]
    pa = ctx.k.page_alloc
    if pa.memmap.pages:  # _thp_frames: any pfn in a live THP folio?
        order = pa.compound_order
        for f in {p >> HPAGE_PMD_ORDER for p in pfns}:
            if order(f << HPAGE_PMD_ORDER) == HPAGE_PMD_ORDER:
                return False
    base = ctx.base_pfn
    kind = ctx.kind
    kinds = [kind.item(p - base) for p in pfns]
    counters = ctx.k.counters
    counters["fork_pte_copy"] += len(pfns)
    counters["fork_folio"] += len(kinds) - kinds.count(ZERO)
    mc = ctx.mapcount  # get_pages
    for p in pfns:
        mc[p - base] += 1
    dst.rss_anon += kinds.count(ANON)  # rss_delta(dst, pfns, 1)
    dst.rss_file += kinds.count(FILE)
    return True


def copy_pte_tables(dst: MmStruct, src: MmStruct, vma: Vma, slots: list[int]) -> None:
    """:func:`copy_pte_range` for each of ``slots`` (ascending), in that order, with the
    numpy work done once over all the tables: the same child tables allocated in the
    same order, the same stores in the same lazy-MMU sections, the same counters and
    page accounting applied table by table (so a failed allocation leaves what the
    table-by-table loop would). Folio batches are formed over all the tables at once
    with a gap in the positions between tables, so no batch spans two tables.

    Only used when no interrupt hook can run between the stores (``irq_hook``): the
    parent's tables are read up front, and only this function writes them."""
    ctx, arch = src.ctx, src.ctx.arch
    s, e = vma.start, vma.end
    n = len(slots)
    spas = [src.tables[3][sl] << PAGE_SHIFT for sl in slots]
    tab = np.stack([arch.read_table(pa) for pa in spas])  # a copy, n x 512
    lo = max(s - (slots[0] << 21), 0) >> PAGE_SHIFT
    hi = min(e - (slots[-1] << 21), PMD_SIZE) >> PAGE_SHIFT
    tab[0, :lo] = 0  # outside the VMA: not copied
    tab[-1, hi:] = 0
    nzm = tab != 0
    nnz = np.count_nonzero(nzm, axis=1).tolist()
    present = arch.ptes_present(tab) & nzm
    rows, cols = np.nonzero(present)  # table by table, ascending within each
    pfns = arch.ptes_pfn(tab[rows, cols])
    ends = np.cumsum(np.count_nonzero(present, axis=1)).tolist()
    starts, _ = folio_pte_batches(ctx, rows * 1024 + cols, pfns)  # 1024: no batch spans
    folios = np.bincount(rows[starts], minlength=n).tolist()
    kinds = ctx.kind[pfns - ctx.base_pfn]
    anon = np.bincount(rows[kinds == ANON], minlength=n).tolist()
    file = np.bincount(rows[kinds == FILE], minlength=n).tolist()
    if vma.shared:
        wp, wcount = tab, [0] * n
        wmask = None
    else:  # is_cow_mapping: write-protect both sides
        wmask = arch.ptes_write(tab) & nzm
        wp = np.where(wmask, arch.ptes_wrprotect(tab), tab)
        wcount = np.count_nonzero(wmask, axis=1).tolist()
    child = arch.ptes_mkold(wp)
    counters = ctx.k.counters
    p1 = 0
    for i, slot in enumerate(slots):
        base = slot << 21
        dpa = m.pxd_alloc(dst, 3, max(s, base))
        p0, p1 = p1, ends[i]  # this table's present PTEs in rows/cols/pfns
        if not nnz[i]:
            continue
        a = lo if i == 0 else 0
        b = hi if i == n - 1 else 512
        idx: Any = slice(a, b) if nnz[i] == b - a else np.flatnonzero(nzm[i])
        page = pfns[p0:p1]
        counters["fork_pte_copy"] += p1 - p0
        counters["fork_folio"] += folios[i]
        m.get_pages(ctx, page)
        dst.rss_anon += anon[i]
        dst.rss_file += file[i]
        arch.arch_enter_lazy_mmu_mode()
        try:
            if wmask is not None and wcount[i]:
                w = idx if wcount[i] == nnz[i] else np.flatnonzero(wmask[i])
                arch.pt_store_batch(spas[i], w, wp[i, w])
            arch.pt_store_batch(dpa, idx, child[i, idx])
        finally:
            arch.arch_leave_lazy_mmu_mode()
