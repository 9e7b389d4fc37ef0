"""User page faults, zapping and table freeing: ``mm/memory.c`` and the THP parts of
``mm/huge_memory.c``.

- ``handle_mm_fault``: allocates every missing table on the path (pt-lifecycle.md
  rule 1); anonymous read faults map the zero page, write faults a new zeroed page
  (``GFP_HIGHUSER_MOVABLE | __GFP_ZERO``); file faults map the page-cache page (private
  write faults copy it); write faults on write-protected private pages copy or reuse
  (``do_wp_page``); in ``MADV_HUGEPAGE`` VMAs a 2 MiB slot wholly inside the VMA gets a
  PMD-mapped THP (or the huge zero page on a read) with a deposited, counted PTE table
  (rule 2).
- ``zap_page_range``/``unmap_vmas``: clear entries a whole PTE table at a time (one
  lazy-MMU section per table, as ``zap_pte_range``), THPs as a unit (freeing the
  deposit) or split first when only part of one goes.
- ``free_pgtables``: the floor/ceiling walk (rule 3): a table goes only when its whole
  slot lies inside [floor, ceiling).
- zapping and table freeing go through an :class:`~kpsim.mm.mmu_gather.MmuGather`
  (only the range actually cleared is flushed); zap counts ``zap_pte`` per present
  PTE and ``zap_folio`` per folio batch; a THP is one order-9 folio
  (:mod:`kpsim.mm.folio`).

Left out: swap, rmap, memcg, NUMA, fault-around, RCU table freeing (tables are
freed at once), khugepaged; a COW write to a shared THP
copies the whole THP (Linux splits the PMD and copies one page: same table count).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from kpsim.errors import OutOfMemory
from kpsim.mm.folio import folio_pte_batches, free_unmapped, unique_sorted
from kpsim.mm.gfp import GFP_HIGHUSER_MOVABLE, GFP_PGTABLE_USER, Gfp
from kpsim.mm.mm_types import (
    ANON,
    FILE,
    HPAGE_PMD_ORDER,
    LEVEL_SHIFT,
    PAGE_SHIFT,
    PMD_SIZE,
    SPAN_SHIFT,
    ZERO,
    MmContext,
    MmStruct,
    SegmentationFault,
    Vma,
    VmFlags,
)
from kpsim.mm.mmu_gather import MmuGather

_IDX: Final = np.arange(512, dtype=np.int64)
_GFP_USER_ZERO: Final = GFP_HIGHUSER_MOVABLE | Gfp.ZERO
_VM_READ: Final = int(VmFlags.READ)
_VM_WRITE: Final = int(VmFlags.WRITE)


# --------------------------------------------------------------------------- tables


def slots_in(index: dict[int, int], lo: int, hi: int) -> list[int]:
    """The keys of ``index`` in [lo, hi], ascending."""
    if hi - lo + 1 <= 2 * len(index):
        return [s for s in range(lo, hi + 1) if s in index]
    return sorted(s for s in index if lo <= s <= hi)


def table_pa(mm: MmStruct, level: int, addr: int) -> int | None:
    """Physical address of the level-``level`` table covering ``addr`` (None: absent)."""
    if level == 0:
        return mm.pgd_pa
    pfn = mm.tables[level].get(addr >> SPAN_SHIFT[level])
    return None if pfn is None else pfn << PAGE_SHIFT


def entry_index(level: int, addr: int) -> int:
    return (addr >> LEVEL_SHIFT[level]) & 0x1FF


def entry_ptr(mm: MmStruct, tpa: int, level: int, addr: int) -> int:
    """Linear-map pointer to the entry for ``addr`` in the table at ``tpa``."""
    return mm.ctx.arch.phys_to_virt(tpa) + (entry_index(level, addr) << 3)


def read_entry(mm: MmStruct, tpa: int, level: int, addr: int) -> int:
    return mm.ctx.k.mem.read64(tpa + (entry_index(level, addr) << 3))


def pte_alloc_one(mm: MmStruct, level: int) -> int:
    """``__pte_alloc_one``/``pmd_alloc_one``/``pud_alloc_one``: a zeroed table page."""
    pfn = mm.ctx.k.pgtable.alloc_table(GFP_PGTABLE_USER, level, mm.owner)
    if pfn is None:
        raise OutOfMemory(f"page table (level {level}) for {mm.owner}")
    return int(pfn)


def pxd_alloc(mm: MmStruct, level: int, addr: int) -> int:
    """``pud_alloc``/``pmd_alloc``/``pte_alloc``: the table at ``level``, made if missing."""
    if level == 0:
        return mm.pgd_pa
    slot = addr >> SPAN_SHIFT[level]
    pfn = mm.tables[level].get(slot)
    if pfn is None:
        parent = pxd_alloc(mm, level - 1, addr)
        pfn = pte_alloc_one(mm, level)
        populate(mm, parent, level - 1, addr, pfn)
        mm.tables[level][slot] = pfn
    return pfn << PAGE_SHIFT


def populate(mm: MmStruct, parent_pa: int, parent_level: int, addr: int, pfn: int) -> None:
    """``pgd_populate``/``pud_populate``/``pmd_populate``: link a table into its parent."""
    arch = mm.ctx.arch
    arch.pt_store(
        entry_ptr(mm, parent_pa, parent_level, addr), arch.user_table_desc(pfn << PAGE_SHIFT)
    )


def free_table(mm: MmStruct, level: int, slot: int) -> None:
    """Unlink the level-``level`` table of ``slot`` (``pmd_clear``...) and free it."""
    addr = slot << SPAN_SHIFT[level]
    parent = table_pa(mm, level - 1, addr)
    assert parent is not None
    mm.ctx.arch.pt_store(entry_ptr(mm, parent, level - 1, addr), 0)
    pfn = mm.tables[level].pop(slot)
    mm.ctx.k.pgtable.free_table(pfn)


def pmd_entry(mm: MmStruct, addr: int) -> tuple[int, int] | None:
    """(pmd table pa, entry value) for ``addr``, or None without a PMD table."""
    tpa = table_pa(mm, 2, addr)
    return None if tpa is None else (tpa, read_entry(mm, tpa, 2, addr))


# --------------------------------------------------------------------------- pages


def get_pages(ctx: MmContext, pfns: Any) -> None:
    np.add.at(ctx.mapcount, np.asarray(pfns, dtype=np.int64) - ctx.base_pfn, 1)


def put_pages(ctx: MmContext, pfns: Any) -> None:
    """Drop one mapping of each page; free the pages nobody maps any more."""
    idx = np.asarray(pfns, dtype=np.int64) - ctx.base_pfn
    np.subtract.at(ctx.mapcount, idx, 1)
    dead = unique_sorted(idx[ctx.mapcount[idx] == 0])
    if dead.size:  # ascending; a THP folio goes whole once all its subpages are unmapped
        free_unmapped(ctx, dead + ctx.base_pfn)


def put_page(ctx: MmContext, pfn: int) -> None:
    """:func:`put_pages` of one page, as scalars (freed through the same
    :func:`~kpsim.mm.folio.free_unmapped` when its last mapping goes)."""
    i = pfn - ctx.base_pfn
    mc = ctx.mapcount1
    mc[i] -= 1
    if mc[i] == 0:
        free_unmapped(ctx, np.array([pfn], dtype=np.int64))


def rss_delta(mm: MmStruct, pfns: Any, sign: int) -> None:
    kinds = mm.ctx.kind[np.asarray(pfns, dtype=np.int64) - mm.ctx.base_pfn]
    mm.rss_anon += sign * int(np.count_nonzero(kinds == ANON))
    mm.rss_file += sign * int(np.count_nonzero(kinds == FILE))


def alloc_user_page(ctx: MmContext, *, zero: bool = True, order: int = 0) -> int | None:
    """A user page, or with ``order`` a compound folio (``vma_alloc_anon_folio_pmd``:
    one order-9 allocation; its 512 subpages cleared, counted as ``clear_huge_page``
    does, one ``clear_page`` each). :mod:`kpsim.mm.folio` frees it whole."""
    gfp = _GFP_USER_ZERO if zero else GFP_HIGHUSER_MOVABLE
    if order:
        gfp |= Gfp.COMP
    pfn = ctx.k.page_alloc.alloc_pages(gfp, order)
    if pfn is None:
        return None
    i = pfn - ctx.base_pfn
    if order:
        ctx.kind[i : i + (1 << order)] = ANON
    else:
        ctx.kind1[i] = ANON
    return int(pfn)


def copy_user_pages(ctx: MmContext, dst: int, src: int, n: int = 1) -> None:
    """``copy_user_highpage``: copy frame contents (only frames ever written hold data)."""
    mem = ctx.k.mem
    for i in range(n):
        if (src + i) in mem.frames:
            mem.frame(dst + i)[:] = mem.frames[src + i]


_ACCESS: Final = VmFlags.READ | VmFlags.WRITE | VmFlags.EXEC


def _anon_vma_compatible(a: Vma, b: Vma) -> bool:
    """``anon_vma_compatible``: ``a`` ends where ``b`` starts, same file, flags equal but
    for the access bits, and file offsets that continue."""
    return (
        a.end == b.start
        and a.file == b.file
        and not (a.flags ^ b.flags) & ~_ACCESS
        and b.pgoff == a.pgoff + ((a.end - a.start) >> PAGE_SHIFT)
    )


def anon_vma_prepare(ctx: MmContext, vma: Vma, mm: MmStruct | None = None) -> None:
    """``__anon_vma_prepare``: with ``mm``, first reuse a compatible neighbour's anon_vma
    (``find_mergeable_anon_vma``: the next VMA, then the previous), so that the two can
    merge later; otherwise a new one. (Linux reuses it only if the neighbour's chain is
    singular, i.e. not inherited by fork: not tracked, reused regardless.)"""
    if vma.anon_vma is not None:
        return
    if mm is not None:
        i = mm.vma_index(vma)
        if i + 1 < len(mm.vmas) and _anon_vma_compatible(vma, mm.vmas[i + 1]):
            vma.anon_vma = mm.vmas[i + 1].anon_vma
        if vma.anon_vma is None and i > 0 and _anon_vma_compatible(mm.vmas[i - 1], vma):
            vma.anon_vma = mm.vmas[i - 1].anon_vma
        if vma.anon_vma is not None:
            return
    vma.anon_vma = ctx.new_anon_vma()


# --------------------------------------------------------------------------- faults


def handle_mm_fault(mm: MmStruct, addr: int, write: bool) -> None:
    """Resolve a user fault at ``addr`` or raise :class:`SegmentationFault`."""
    vma = mm.find_vma(addr)
    if vma is None or addr < vma.start:
        raise SegmentationFault(f"{mm.owner}: no VMA at {addr:#x}")
    need = _VM_WRITE if write else _VM_READ | _VM_WRITE
    if not int(vma.flags) & need:
        raise SegmentationFault(f"{mm.owner}: {'write' if write else 'read'} at {addr:#x}")
    mm.ctx.k.counters["pgfault"] += 1
    slot = addr >> 21
    if slot in mm.thp:
        return huge_pmd_fault(mm, vma, addr, write)
    tpfn = mm.tables[3].get(slot)  # pxd_alloc, entry_ptr and read_entry, inlined
    if (
        tpfn is None
        and thp_eligible(mm.ctx, vma, addr)
        and do_huge_pmd_anonymous_page(mm, vma, addr, write)
    ):
        return None
    pte_pa = pxd_alloc(mm, 3, addr) if tpfn is None else tpfn << PAGE_SHIFT
    arch = mm.ctx.arch
    idx = (addr >> PAGE_SHIFT) & 0x1FF
    frame = mm.ctx.k.mem.frames.get(pte_pa >> PAGE_SHIFT)
    v = 0 if frame is None else frame.item(idx)
    ptr = arch.phys_to_virt(pte_pa) + (idx << 3)
    if v == 0:
        return do_pte_missing(mm, vma, addr, write, ptr)
    if not arch.pte_present(v) or not v & 1:  # PROT_NONE left behind: refresh from the VMA
        v = arch.pte_modify(v, vma.page_prot(arch))
        arch.pt_store(ptr, v)
    if write and not arch.pte_write(v):
        return do_wp_page(mm, vma, addr, ptr, v)
    new = arch.pte_mkyoung(arch.pte_mkdirty(v) if write else v)
    if new != v:
        arch.pt_store(ptr, new)  # ptep_set_access_flags
    arch.flush_tlb_page(mm.asid, addr)
    return None


def thp_eligible(ctx: MmContext, vma: Vma, addr: int) -> bool:
    """``thp_vma_allowable_order`` + ``thp_vma_suitable_order`` for a PMD-sized folio."""
    f = vma.flags
    if vma.file is not None or f & VmFlags.SHARED or f & VmFlags.NOHUGEPAGE:
        return False
    if ctx.thp == "never" or (ctx.thp == "madvise" and not f & VmFlags.HUGEPAGE):
        return False
    haddr = addr & ~(PMD_SIZE - 1)
    return vma.start <= haddr and haddr + PMD_SIZE <= vma.end


def do_pte_missing(mm: MmStruct, vma: Vma, addr: int, write: bool, ptr: int) -> None:
    ctx, arch = mm.ctx, mm.ctx.arch
    prot = vma.page_prot(arch)
    if vma.file is None:  # do_anonymous_page
        if not write:
            arch.pt_store(ptr, arch.pfn_pte(ctx.zero_pfn, prot))
            return
        if vma.anon_vma is None:
            anon_vma_prepare(ctx, vma, mm)
        pfn = alloc_user_page(ctx)
    else:
        pgoff = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
        page = ctx.find_get_page(vma.file, pgoff)
        pfn = page  # do_read_fault / do_shared_fault
        if write and not vma.shared:  # do_cow_fault
            anon_vma_prepare(ctx, vma, mm)
            pfn = alloc_user_page(ctx, zero=False)
            if pfn is not None:
                copy_user_pages(ctx, pfn, page)
    if pfn is None:
        raise OutOfMemory(f"user page for {mm.owner}")
    i = pfn - ctx.base_pfn  # get_pages + rss_delta for one page
    ctx.mapcount1[i] += 1
    kind = ctx.kind1[i]
    if kind == ANON:
        mm.rss_anon += 1
    elif kind == FILE:
        mm.rss_file += 1
    entry = arch.pfn_pte(pfn, prot)
    if write:
        entry = arch.pte_mkwrite(arch.pte_mkdirty(entry))
    arch.pt_store(ptr, entry)


def _rss_one(mm: MmStruct, pfn: int, sign: int) -> None:
    """:func:`rss_delta` of one page."""
    kind = mm.ctx.kind1[pfn - mm.ctx.base_pfn]
    if kind == ANON:
        mm.rss_anon += sign
    elif kind == FILE:
        mm.rss_file += sign


def _account_one(mm: MmStruct, pfn: int) -> None:
    """:func:`get_pages` and :func:`rss_delta` (+1) of one newly mapped page."""
    mm.ctx.mapcount1[pfn - mm.ctx.base_pfn] += 1
    _rss_one(mm, pfn, 1)


def do_wp_page(mm: MmStruct, vma: Vma, addr: int, ptr: int, v: int) -> None:
    """Write to a write-protected present page: reuse it if exclusive, else copy."""
    ctx, arch = mm.ctx, mm.ctx.arch
    old = arch.pte_pfn(v)
    i = old - ctx.base_pfn
    kind = ctx.kind1[i]  # the old page's kind (allocating the copy leaves it)
    if vma.shared or (kind == ANON and ctx.mapcount1[i] == 1):  # wp_page_reuse
        arch.pt_store(ptr, arch.pte_mkwrite(arch.pte_mkdirty(arch.pte_mkyoung(v))))
        arch.flush_tlb_page(mm.asid, addr)
        return
    if vma.anon_vma is None:  # wp_page_copy
        anon_vma_prepare(ctx, vma, mm)
    pfn = alloc_user_page(ctx, zero=kind == ZERO)
    if pfn is None:
        raise OutOfMemory(f"COW page for {mm.owner}")
    if kind != ZERO:
        copy_user_pages(ctx, pfn, old)
    _account_one(mm, pfn)  # get_pages + rss_delta of one page, as scalars
    _rss_one(mm, old, -1)
    arch.pt_store(ptr, 0)  # ptep_clear_flush
    arch.flush_tlb_page(mm.asid, addr)
    entry = arch.pte_mkwrite(arch.pte_mkdirty(arch.pfn_pte(pfn, vma.page_prot(arch))))
    arch.pt_store(ptr, entry)
    put_page(ctx, old)


# --------------------------------------------------------------------------- THP


def do_huge_pmd_anonymous_page(mm: MmStruct, vma: Vma, addr: int, write: bool) -> bool:
    """Map a 2 MiB THP (or the huge zero page on a read) and deposit a PTE table."""
    ctx, arch = mm.ctx, mm.ctx.arch
    anon_vma_prepare(ctx, vma, mm)  # vmf_anon_prepare comes first, reads included
    prot = vma.page_prot(arch)
    if not write and ctx.thp_use_zero_page:
        pmd_pa = pxd_alloc(mm, 2, addr)
        deposit = pte_alloc_one(mm, 3)
        entry = arch.pfn_pmd_huge(ctx.huge_zero_pfn, prot)
    else:
        pmd_pa = pxd_alloc(mm, 2, addr)  # __handle_mm_fault's pmd_alloc comes first
        pfn = alloc_user_page(ctx, order=HPAGE_PMD_ORDER)
        if pfn is None:
            ctx.k.counters["thp_fault_fallback"] += 1
            return False
        try:
            deposit = pte_alloc_one(mm, 3)
        except OutOfMemory:  # folio_put(), VM_FAULT_OOM
            ctx.kind[pfn - ctx.base_pfn : pfn - ctx.base_pfn + 512] = 0
            ctx.k.page_alloc.free_pages(pfn, HPAGE_PMD_ORDER)
            raise
        pfns = pfn + _IDX
        get_pages(ctx, pfns)
        mm.rss_anon += 512
        entry = arch.pte_mkwrite(arch.pte_mkdirty(arch.pfn_pmd_huge(pfn, prot)))
        ctx.k.counters["thp_fault_alloc"] += 1
    mm.thp[addr >> 21] = deposit
    arch.pt_store(entry_ptr(mm, pmd_pa, 2, addr), entry)
    return True


def huge_pmd_fault(mm: MmStruct, vma: Vma, addr: int, write: bool) -> None:
    """A fault on a PMD-mapped THP: ``do_huge_pmd_wp_page`` or a spurious fault."""
    ctx, arch = mm.ctx, mm.ctx.arch
    got = pmd_entry(mm, addr)
    assert got is not None
    pmd_pa, v = got
    ptr = entry_ptr(mm, pmd_pa, 2, addr)
    haddr = addr & ~(PMD_SIZE - 1)
    if not write or arch.pte_write(v):
        young = arch.pte_mkyoung(arch.pte_mkdirty(v) if write else v)
        if young != v:
            arch.pt_store(ptr, young)
        arch.flush_tlb_range(mm.asid, haddr, haddr + PMD_SIZE)
        return
    head = arch.pte_pfn(v)
    pfns = head + _IDX
    idx = pfns - ctx.base_pfn
    if ctx.kind[idx[0]] == ANON and bool(np.all(ctx.mapcount[idx] == 1)):
        arch.pt_store(ptr, arch.pte_mkwrite(arch.pte_mkdirty(v)))
    else:
        new = alloc_user_page(ctx, zero=bool(ctx.kind[idx[0]] == ZERO), order=HPAGE_PMD_ORDER)
        if new is None:
            __split_huge_pmd(mm, addr >> 21)
            handle_mm_fault(mm, addr, write)
            return
        if ctx.kind[idx[0]] != ZERO:
            copy_user_pages(ctx, new, head, 512)
            mm.rss_anon -= 512
        get_pages(ctx, new + _IDX)
        mm.rss_anon += 512
        entry = arch.pte_mkwrite(arch.pte_mkdirty(arch.pfn_pmd_huge(new, vma.page_prot(arch))))
        arch.pt_store(ptr, 0)
        arch.pt_store(ptr, entry)
        put_pages(ctx, pfns)
    arch.flush_tlb_range(mm.asid, haddr, haddr + PMD_SIZE)


def __split_huge_pmd(mm: MmStruct, slot: int) -> None:
    """``__split_huge_pmd``: withdraw the deposit, fill it with 512 PTEs, link it.

    The folio stays whole (PTE-mapped); ``pmdp_invalidate`` flushes the PMD with
    ``flush_pmd_tlb_range`` (one non-last-level TLBI for the 2 MiB stride)."""
    ctx, arch = mm.ctx, mm.ctx.arch
    addr = slot << 21
    got = pmd_entry(mm, addr)
    assert got is not None
    pmd_pa, v = got
    deposit = mm.thp.pop(slot)
    head = arch.pte_pfn(v)
    prot = arch.pmd_to_pte_prot(v)
    zero = head == ctx.huge_zero_pfn
    pfns = np.full(512, ctx.zero_pfn, dtype=np.int64) if zero else head + _IDX
    ptes = arch.ptes_from_pfns(pfns, prot)
    ptr = entry_ptr(mm, pmd_pa, 2, addr)
    arch.pt_store(ptr, 0)  # pmdp_invalidate
    arch.flush_tlb_range(mm.asid, addr, addr + PMD_SIZE, stride=PMD_SIZE, last_level=False)
    arch.pt_store_batch(deposit << PAGE_SHIFT, slice(None), ptes)
    arch.pt_store(ptr, arch.user_table_desc(deposit << PAGE_SHIFT))
    mm.tables[3][slot] = deposit
    ctx.k.counters["thp_split_pmd"] += 1


def split_huge_pmd_at(mm: MmStruct, addr: int) -> None:
    """``split_huge_pmd_address``: split the THP holding ``addr`` unless ``addr`` is its start."""
    if addr & (PMD_SIZE - 1) and (addr >> 21) in mm.thp:
        __split_huge_pmd(mm, addr >> 21)


def zap_huge_pmd(mm: MmStruct, slot: int, tlb: MmuGather | None = None) -> None:
    """Clear a THP's PMD, drop its folio and free the deposited PTE table (rule 2).

    ``tlb_remove_pmd_tlb_entry`` widens the gather by the PMD; the deposit goes with
    ``pte_free`` (not ``pte_free_tlb``: it was never linked); the folio is one gather
    slot and one ``zap_folio``."""
    ctx, arch = mm.ctx, mm.ctx.arch
    own = tlb is None
    gather = MmuGather(mm) if tlb is None else tlb
    addr = slot << 21
    got = pmd_entry(mm, addr)
    assert got is not None
    pmd_pa, v = got
    arch.pt_store(entry_ptr(mm, pmd_pa, 2, addr), 0)
    gather.flush_pmd_range(addr, PMD_SIZE)
    head = arch.pte_pfn(v)
    if head != ctx.huge_zero_pfn:
        pfns = head + _IDX
        rss_delta(mm, pfns, -1)
        put_pages(ctx, pfns)
        ctx.k.counters["zap_folio"] += 1
        if gather.remove_folio():
            gather.flush_mmu()
    ctx.k.pgtable.free_table(mm.thp.pop(slot))
    if own:
        gather.finish()


# --------------------------------------------------------------------------- zap


def zap_page_range(
    mm: MmStruct,
    start: int,
    end: int,
    *,
    reclaim_pt: bool = False,
    tlb: MmuGather | None = None,
) -> int:
    """Clear every entry in [start, end) (one VMA's part); return the entries cleared.

    ``unmap_page_range`` between ``tlb_start_vma`` and ``tlb_end_vma``: with no
    ``tlb`` this is ``zap_page_range_single`` (its own gather, finished here). With
    ``reclaim_pt`` (``MADV_DONTNEED`` with PT_RECLAIM) also free the PTE table of
    each 2 MiB slot wholly inside [start, end) (rule 4; ``free_pte`` ->
    ``pte_free_tlb``, so the flush invalidates the walk cache).
    """
    if end <= start:
        return 0
    own = tlb is None
    gather = MmuGather(mm) if tlb is None else tlb
    for slot in slots_in(mm.thp, start >> 21, (end - 1) >> 21) if mm.thp else ():
        if slot << 21 >= start and (slot + 1) << 21 <= end:
            zap_huge_pmd(mm, slot, gather)
        else:
            __split_huge_pmd(mm, slot)
    cleared = 0
    for slot in slots_in(mm.tables[3], start >> 21, (end - 1) >> 21):
        cleared += zap_pte_range(mm, slot, start, end, gather)
        if reclaim_pt and slot << 21 >= start and (slot + 1) << 21 <= end:
            free_table(mm, 3, slot)
            gather.free_table(3, slot << 21)
            mm.ctx.k.counters["pt_reclaim"] += 1
    gather.end_vma()
    if own:
        gather.finish()
    return cleared


def pte_table_slice(mm: MmStruct, slot: int, start: int, end: int) -> tuple[int, int, Any, Any]:
    """The PTE table of ``slot`` clipped to [start, end): (table pa, first index, the
    entries, the positions of the non-empty ones), as the per-table walkers start."""
    tpa = mm.tables[3][slot] << PAGE_SHIFT
    base = slot << 21
    a = max(start - base, 0) >> PAGE_SHIFT
    b = min(end - base, PMD_SIZE) >> PAGE_SHIFT
    arr = mm.ctx.arch.read_table(tpa)[a:b]
    # (nonzero()[0] is flatnonzero of a 1-D array without numpy's two interpreted
    # wrapper calls: this runs per PTE table zapped)
    return tpa, a, arr, arr.nonzero()[0]


def zap_pte_range(
    mm: MmStruct, slot: int, start: int, end: int, tlb: MmuGather | None = None
) -> int:
    """Clear one PTE table's entries in [start, end) in one lazy-MMU section.

    ``zap_present_ptes``: per present PTE a ``zap_pte``, per folio batch
    (``folio_pte_batch``) a ``zap_folio`` (the zero page is no folio); the cleared
    PTEs widen the gather's range and fill its batches (a full gather flushes)."""
    ctx, arch = mm.ctx, mm.ctx.arch
    tpa, a, arr, nz = pte_table_slice(mm, slot, start, end)
    if nz.size == 0:
        return 0
    if nz.size <= ZAP_SMALL and _zap_small(mm, slot, tpa, a, arr, nz, tlb):
        return int(nz.size)
    vals = arr[nz]
    present = arch.ptes_present(vals)
    pidx = nz[present] + a
    pfns = arch.ptes_pfn(vals[present])
    arch.arch_enter_lazy_mmu_mode()
    try:
        arch.pt_store_batch(tpa, nz + a, np.uint64(0))
    finally:
        arch.arch_leave_lazy_mmu_mode()
    starts, sizes = folio_pte_batches(ctx, pidx, pfns)
    counters = ctx.k.counters
    counters["zap_pte"] += int(pidx.size)
    counters["zap_folio"] += int(starts.size)
    rss_delta(mm, pfns, -1)
    put_pages(ctx, pfns)
    if tlb is None:
        gather = MmuGather(mm)
        gather.remove_ptes((slot << 21) + (pidx << PAGE_SHIFT), starts, sizes)
        gather.finish()
    else:
        tlb.remove_ptes((slot << 21) + (pidx << PAGE_SHIFT), starts, sizes)
    return int(nz.size)


#: Tables with at most this many non-empty entries in the zapped range take
#: :func:`_zap_small` (Python scalars instead of whole-array numpy calls).
ZAP_SMALL = 48


def _zap_small(
    mm: MmStruct, slot: int, tpa: int, a: int, arr: Any, nz: Any, tlb: MmuGather | None
) -> bool:
    """:func:`zap_pte_range` for a few entries and no large folio: the same stores,
    counters, map counts, frees and gather calls, computed per entry in Python (the
    whole-array path's numpy calls cost more than the work on a handful of PTEs).
    False (nothing done) when a pfn lies in a THP frame: the general path handles it."""
    ctx, arch = mm.ctx, mm.ctx.arch
    base = ctx.base_pfn
    present = arch.pte_present
    pte_pfn = arch.pte_pfn
    pidx: list[int] = []
    pfns: list[int] = []
    for i, v in zip(nz.tolist(), arr[nz].tolist(), strict=True):
        if present(v):
            pidx.append(i + a)
            pfns.append(pte_pfn(v))
    if ctx.k.page_alloc.memmap.pages:  # _thp_frames: any pfn in a live THP folio?
        order = ctx.k.page_alloc.compound_order
        for f in {p >> HPAGE_PMD_ORDER for p in pfns}:
            if order(f << HPAGE_PMD_ORDER) == HPAGE_PMD_ORDER:
                return False
    arch.arch_enter_lazy_mmu_mode()
    try:
        arch.pt_store_batch(tpa, nz + a, np.uint64(0))
    finally:
        arch.arch_leave_lazy_mmu_mode()
    kind = ctx.kind1  # (the scalar views: one entry as a Python int, no numpy scalar)
    kinds = [kind[p - base] for p in pfns]
    starts = [j for j, k in enumerate(kinds) if k != ZERO]  # each small folio a batch
    counters = ctx.k.counters
    counters["zap_pte"] += len(pidx)
    counters["zap_folio"] += len(starts)
    mm.rss_anon -= kinds.count(ANON)  # rss_delta(mm, pfns, -1)
    mm.rss_file -= kinds.count(FILE)
    mc = ctx.mapcount1  # put_pages: drop a mapping each, free the unmapped ones
    for p in pfns:
        mc[p - base] -= 1
    dead = sorted({p for p in pfns if mc[p - base] == 0})
    if dead:
        ctx.k.page_alloc.free_pages_bulk(dead)
    addrs = [(slot << 21) + (i << PAGE_SHIFT) for i in pidx]
    if tlb is None:
        gather = MmuGather(mm)
        gather.remove_pte_pages(addrs, starts)
        gather.finish()
    else:
        tlb.remove_pte_pages(addrs, starts)
    return True


def unmap_vmas(mm: MmStruct, vmas: Iterable[Vma], tlb: MmuGather | None = None) -> None:
    """``unmap_vmas``: zap each VMA into one gather (a gather of its own, finished
    here, when ``tlb`` is None)."""
    gather = MmuGather(mm) if tlb is None else tlb
    for vma in vmas:
        zap_page_range(mm, vma.start, vma.end, tlb=gather)
    if tlb is None:
        gather.finish()


def free_pgtables(
    mm: MmStruct,
    start: int,
    end: int,
    floor: int,
    ceiling: int | None,
    tlb: MmuGather | None = None,
) -> int:
    """Free the tables over [start, end) whose slot lies inside [floor, ceiling) (rule 3).

    ``ceiling`` None is the top of the address space (``USER_PGTABLES_CEILING``).
    Returns the number of tables freed. Entries must already be zapped. Each table
    freed goes through the gather (``pte_free_tlb`` at the walk's address,
    ``pmd_free_tlb``/``pud_free_tlb`` at the start of the table's span), so the
    gather's flush invalidates the walk cache; a gather of its own is finished here
    when ``tlb`` is None.
    """
    gather = MmuGather(mm) if tlb is None else tlb
    freed = 0
    for level in (3, 2, 1):
        sh = SPAN_SHIFT[level]
        for slot in slots_in(mm.tables[level], start >> sh, (end - 1) >> sh):
            lo, hi = slot << sh, (slot + 1) << sh
            if lo >= floor and (ceiling is None or hi <= ceiling):
                free_table(mm, level, slot)
                gather.free_table(level, max(lo, start) if level == 3 else lo)
                freed += 1
    if tlb is None:
        gather.finish()
    return freed


# --------------------------------------------------------------------------- audit


def check_tree(mm: MmStruct) -> list[str]:
    """Walk the tree in simulated RAM and compare it with the mm's table index."""
    arch, problems = mm.ctx.arch, []
    found: tuple[dict[int, int], ...] = ({}, {}, {}, {})
    thp: dict[int, int] = {}

    def walk(tpa: int, level: int, prefix: int) -> None:
        arr = arch.read_table(tpa)
        for i in np.flatnonzero(arr).tolist():
            v = int(arr[i])
            slot = (prefix << 9) | i
            if level < 3 and arch.pmd_table(v):
                found[level + 1][slot] = arch.table_desc_pa(v) >> PAGE_SHIFT
                walk(arch.table_desc_pa(v), level + 1, slot)
            elif level == 2 and arch.pmd_trans_huge(v):
                thp[slot] = 1

    walk(mm.pgd_pa, 0, 0)
    for level in (1, 2, 3):
        if found[level] != mm.tables[level]:
            problems.append(f"{mm.owner}: level {level} tables in RAM differ from the index")
    if set(thp) != set(mm.thp):
        problems.append(f"{mm.owner}: THP PMDs in RAM differ from the deposits")
    return problems


def populate_pte_range(mm: MmStruct, vma: Vma, start: int, end: int, write: bool) -> None:
    """Install anonymous entries for every empty slot of [start, end) (one PTE table)."""
    ctx, arch = mm.ctx, mm.ctx.arch
    tpa = pxd_alloc(mm, 3, start)
    a = (start >> PAGE_SHIFT) & 0x1FF
    arr = arch.read_table(tpa)[a : a + ((end - start) >> PAGE_SHIFT)]
    missing = np.flatnonzero(arr == 0)
    if missing.size == 0:
        return
    prot = vma.page_prot(arch)
    if write and vma.flags & VmFlags.WRITE:
        anon_vma_prepare(ctx, vma, mm)
        got = [alloc_user_page(ctx) for _ in range(missing.size)]
        if any(p is None for p in got):
            for p in got:  # nothing was mapped yet: give back what was taken
                if p is not None:
                    ctx.kind[p - ctx.base_pfn] = 0
                    ctx.k.page_alloc.free_pages(p)
            raise OutOfMemory(f"populate for {mm.owner}")
        pfns = np.asarray(got, dtype=np.int64)
        get_pages(ctx, pfns)
        mm.rss_anon += int(pfns.size)
        template = arch.pte_mkwrite(arch.pte_mkdirty(arch.pfn_pte(0, prot)))
    else:
        pfns = np.full(missing.size, ctx.zero_pfn, dtype=np.int64)
        template = arch.pfn_pte(0, prot)
    arch.pt_store_batch(tpa, missing + a, arch.ptes_from_pfns(pfns, template))
