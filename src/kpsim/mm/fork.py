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

from typing import Any

import numpy as np

from kpsim.mm import memory as m
from kpsim.mm.folio import folio_pte_batch_count
from kpsim.mm.mm_types import PAGE_SHIFT, PMD_SIZE, SPAN_SHIFT, MmStruct, Vma, VmFlags


def vma_needs_copy(vma: Vma) -> bool:
    return vma.anon_vma is not None


def dup_mm(parent: MmStruct) -> MmStruct:
    """A new mm with the parent's VMAs, and tables copied for those that need it."""
    child = MmStruct(parent.ctx)
    child.mmap_base, child.start_brk, child.brk = parent.mmap_base, parent.start_brk, parent.brk
    for vma in parent.vmas:
        if vma.flags & VmFlags.DONTCOPY:
            continue
        wipe = bool(vma.flags & VmFlags.WIPEONFORK)  # a clean slate: no anon_vma, no copy
        anon = parent.ctx.new_anon_vma() if vma.anon_vma is not None and not wipe else None
        child.insert_vma(Vma(vma.start, vma.end, vma.flags, vma.file, vma.pgoff, anon, vma.name))
        if vma_needs_copy(vma) and not wipe:
            copy_page_range(child, parent, vma)
    parent.ctx.arch.flush_tlb_mm(parent.asid)
    return child


def copy_page_range(dst: MmStruct, src: MmStruct, vma: Vma) -> None:
    """Copy every table and entry of ``src`` over ``vma`` into ``dst``."""
    s, e = vma.start, vma.end
    for level in (1, 2):
        sh = SPAN_SHIFT[level]
        for slot in m.slots_in(src.tables[level], s >> sh, (e - 1) >> sh):
            m.pxd_alloc(dst, level, max(s, slot << sh))
    for slot in m.slots_in(src.thp, s >> 21, (e - 1) >> 21):
        copy_huge_pmd(dst, src, vma, slot)
    for slot in m.slots_in(src.tables[3], s >> 21, (e - 1) >> 21):
        copy_pte_range(dst, src, vma, slot)


def copy_huge_pmd(dst: MmStruct, src: MmStruct, vma: Vma, slot: int) -> None:
    ctx, arch = src.ctx, src.ctx.arch
    addr = slot << 21
    got = m.pmd_entry(src, addr)
    assert got is not None
    spa, v = got
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
    dpa = m.pxd_alloc(dst, 2, addr)
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
    nz = np.flatnonzero(arr)
    if nz.size == 0:
        return
    full = nz.size == arr.size  # every entry in range used: slices, no index arrays
    vals = arr.copy() if full else arr[nz]
    idx: Any = slice(a, b) if full else nz + a
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
