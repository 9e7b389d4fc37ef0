"""vmalloc: kernel virtually contiguous mappings (``mm/vmalloc.c``).

Models ``vmalloc``/``vfree`` (``__vmalloc_node_range``, ``remove_vm_area``),
``vm_map_ram``/``vm_unmap_ram``, the vmap-area allocator (lowest-address first fit
over the free ranges of ``[VMALLOC_START, VMALLOC_END)``, as ``find_vmap_lowest_match``;
a guard page after every ``vm_struct`` unless ``VM_NO_GUARD``; the kernel image
pre-registered by ``vm_area_add_early``), the mapping walk
(``vmap_small_pages_range_noflush`` -> ``vmap_pages_pte_range`` with ``pmd_alloc`` /
``pte_alloc_kernel`` through ``pagetable_alloc`` and a lazy-MMU section around each PTE
table's writes), ``VM_ALLOW_HUGE_VMAP`` (``__vmalloc_node_range_noprof``: PMD_SHIFT from
2 MiB when ``arch_vmap_pmd_supported``, else ``arch_vmap_pte_supported_shift``, 64 KiB
contiguous PTEs on arm64; the area sized and aligned to that shift; ``vm_area_alloc_pages``
takes pages of that order and ``split_page``s them; ``__vmap_pages_range_noflush`` maps
each ``1 << page_shift`` chunk with its own ``vmap_range_noflush`` walk, so its own
lazy-MMU section in ``vmap_pte_range``, where ``arch_vmap_pte_range_map_size`` picks
``set_huge_pte_at`` blocks; any failure retries with small pages), and unmapping
(``vunmap_range_noflush``:
cleared PTEs in a lazy-MMU section per PTE table, contiguous blocks entry by entry as
``huge_ptep_get_and_clear`` does, tables never freed) with the lazy TLB flush
(``free_vmap_area_noflush`` + ``__purge_vmap_area_lazy``: once more than
``lazy_max_pages()`` pages are waiting, one ``flush_tlb_kernel_range`` over the span of
every purged area, then the areas return to the free ranges).

Left out (docs/fidelity.md): per-CPU ``vmap_block`` caches for small ``vm_map_ram``
(every ``vm_map_ram`` gets its own area, without guard as the large path does), the
deferred purge worker (the purge runs synchronously when the threshold is crossed),
node/NUMA placement, ``VM_FLUSH_RESET_PERMS``, KASAN shadow, 1 GiB (PUD) vmalloc blocks,
``pmd_free_pte_page`` (a PMD block over a stale PTE table is an error here).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from kpsim.errors import ModelInvariantError
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL
from kpsim.mm.kernel import Kernel

PAGE_SIZE = 4096
PAGE_SHIFT = 12
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
LAZY_UNIT_PAGES = (32 << 20) >> PAGE_SHIFT  # lazy_max_pages: 32 MiB per fls(cpus)


@dataclass(slots=True)
class VmapArea:
    """A ``vmap_area`` (with its ``vm_struct``): [start, end) incl. any guard page."""

    start: int
    end: int
    nr_pages: int  # mapped pages (the guard excluded)
    kind: str  # "vmalloc" or "vm_map_ram"
    huge: bool = False
    pages: list[tuple[int, int]] = field(default_factory=list)  # (pfn, order) owned


class VmapState:
    """The vmap-area trees and the lazy purge list (``vmap_area_root`` & co.)."""

    __slots__ = ("busy", "free", "lazy_max", "lazy_nr", "purge_list")

    def __init__(self, start: int, end: int, early: list[tuple[int, int]], lazy_max: int):
        self.free: list[tuple[int, int]] = [(start, end)]
        self.busy: dict[int, VmapArea] = {}
        self.purge_list: list[VmapArea] = []
        self.lazy_nr = 0
        self.lazy_max = lazy_max
        for lo, hi in early:
            self.reserve(lo, hi)
            self.busy[lo] = VmapArea(lo, hi, (hi - lo) >> PAGE_SHIFT, "early")

    def reserve(self, lo: int, hi: int) -> None:
        """Cut [lo, hi) out of the free ranges (``adjust_va_to_fit_type``)."""
        out: list[tuple[int, int]] = []
        for a, b in self.free:
            if b <= lo or a >= hi:
                out.append((a, b))
                continue
            if a < lo:
                out.append((a, lo))
            if hi < b:
                out.append((hi, b))
        self.free = out

    def find_lowest_match(self, size: int, align: int) -> int | None:
        """``find_vmap_lowest_match``: the lowest aligned start that fits ``size``."""
        for a, b in self.free:
            start = (a + align - 1) & ~(align - 1)
            if start + size <= b:
                return start
        return None

    def insert_free(self, lo: int, hi: int) -> None:
        """``merge_or_add_vmap_area``: give [lo, hi) back, merging with neighbours."""
        i = bisect.bisect_left(self.free, (lo, hi))
        if i < len(self.free) and self.free[i][0] == hi:
            hi = self.free.pop(i)[1]
        if i > 0 and self.free[i - 1][1] == lo:
            lo = self.free.pop(i - 1)[0]
            i -= 1
        self.free.insert(i, (lo, hi))


def lazy_max_pages(k: Kernel) -> int:
    """``lazy_max_pages``: ``fls(num_online_cpus()) * (32 MiB / PAGE_SIZE)``."""
    return int(k.arch.num_online_cpus()).bit_length() * LAZY_UNIT_PAGES


def vmap_state(k: Kernel) -> VmapState:
    """``vmalloc_init``: the global vmap state, created on first use."""
    if k.vmap is None:
        lo, hi = k.arch.vmalloc_range()
        k.vmap = VmapState(lo, hi, list(k.arch.vmalloc_early_areas()), lazy_max_pages(k))
    state: VmapState = k.vmap
    return state


# -- area allocation --------------------------------------------------------------------
def alloc_vmap_area(k: Kernel, size: int, align: int, kind: str) -> VmapArea | None:
    """``alloc_vmap_area``: lowest fit; on failure purge the lazy areas and retry once."""
    st = vmap_state(k)
    start = st.find_lowest_match(size, align)
    if start is None:
        purge_vmap_area_lazy(k)
        start = st.find_lowest_match(size, align)
        if start is None:
            k.counters["vmap_area_fail"] += 1
            return None
    st.reserve(start, start + size)
    va = VmapArea(start, start + size, 0, kind)
    st.busy[start] = va
    return va


def free_vmap_area_noflush(k: Kernel, va: VmapArea) -> None:
    """Queue an unmapped area for the lazy purge; purge when over ``lazy_max_pages``."""
    st = vmap_state(k)
    st.purge_list.append(va)
    st.lazy_nr += (va.end - va.start) >> PAGE_SHIFT
    if st.lazy_nr > st.lazy_max:
        purge_vmap_area_lazy(k)


def purge_vmap_area_lazy(k: Kernel) -> int:
    """``__purge_vmap_area_lazy``: one TLB flush over every queued area, then free them."""
    st = vmap_state(k)
    if not st.purge_list:
        return 0
    start = min(va.start for va in st.purge_list)
    end = max(va.end for va in st.purge_list)
    k.arch.flush_tlb_kernel_range(start, end)
    n = len(st.purge_list)
    for va in st.purge_list:
        st.insert_free(va.start, va.end)
    st.purge_list.clear()
    st.lazy_nr = 0
    k.counters["vmap_lazy_purge"] += 1
    return n


# -- page-table walk ----------------------------------------------------------------------
def _entry_alloc(k: Kernel, addr: int, level: int) -> int | None:
    """Pointer to the level-``level`` entry for ``addr``, allocating tables above it
    (``p4d_alloc``/``pud_alloc``/``pmd_alloc``/``pte_alloc_kernel``); None on -ENOMEM."""
    arch = k.arch
    ptr: int = arch.pgd_offset_k(addr)
    for lvl in range(1, level + 1):
        v = arch.read_entry(ptr)
        if v == 0:
            pfn = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, lvl, "kernel")
            if pfn is None:
                return None
            arch.pxd_populate_kernel(ptr, lvl - 1, pfn)
        elif arch.pxd_leaf(v, lvl - 1):
            raise ModelInvariantError(f"vmap: {addr:#x} already mapped by a level-{lvl - 1} leaf")
        ptr = arch.next_offset(ptr, addr, lvl)
    return ptr


def _entry_lookup(k: Kernel, addr: int) -> tuple[int, int] | None:
    """(level, pointer) of the leaf-or-none entry mapping ``addr``, no allocation."""
    arch = k.arch
    ptr: int = arch.pgd_offset_k(addr)
    for lvl in range(1, 4):
        v = arch.read_entry(ptr)
        if v == 0:
            return None
        if arch.pxd_leaf(v, lvl - 1):
            return lvl - 1, ptr
        ptr = arch.next_offset(ptr, addr, lvl)
    return 3, ptr


def _pte_table_alloc(k: Kernel, addr: int) -> tuple[int, int] | None:
    """``pte_alloc_kernel``: the PTE table covering ``addr`` (allocated with the tables
    above it if missing) and ``addr``'s index in it; None on -ENOMEM."""
    ptr = _entry_alloc(k, addr, 3)
    if ptr is None:
        return None
    return k.arch.entry_pa(ptr) & ~0xFFF, (addr >> PAGE_SHIFT) & 0x1FF


def vmap_pages_pte_range(k: Kernel, addr: int, pfns: list[int]) -> int:
    """``vmap_pages_pte_range``: map ``pfns`` from ``addr`` (inside one PTE table), one
    ``set_pte_at`` per page in a lazy-MMU section; 0 or -ENOMEM."""
    arch = k.arch
    found = _pte_table_alloc(k, addr)
    if found is None:
        return -12
    table_pa, i0 = found
    arch.arch_enter_lazy_mmu_mode()
    try:
        arch.pt_store_batch(table_pa, slice(i0, i0 + len(pfns)), arch.mk_kernel_ptes(pfns))
        arch.queue_pte_barriers()
    finally:
        arch.arch_leave_lazy_mmu_mode()
    return 0


def vmap_pages_range(k: Kernel, addr: int, pfns: list[int]) -> int:
    """``vmap_small_pages_range_noflush`` (4 KiB pages): one batch per PTE table."""
    i = 0
    while i < len(pfns):
        a = addr + (i << PAGE_SHIFT)
        n = min(len(pfns) - i, 512 - ((a >> PAGE_SHIFT) & 0x1FF))
        ret = vmap_pages_pte_range(k, a, pfns[i : i + n])
        if ret:
            return ret
        i += n
    return 0


def vmap_pte_range(k: Kernel, addr: int, end: int, pfn: int, max_page_shift: int) -> int:
    """``vmap_pte_range``: map the physically contiguous ``[pfn, ...)`` at [addr, end)
    (inside one PTE table) in one lazy-MMU section; where
    ``arch_vmap_pte_range_map_size`` allows a larger size, one ``set_huge_pte_at``
    (contiguous PTEs on arm64), else ``set_pte_at``; 0 or -ENOMEM."""
    arch = k.arch
    found = _pte_table_alloc(k, addr)
    if found is None:
        return -12
    table_pa, i0 = found
    if arch.read_table(table_pa)[i0 : i0 + ((end - addr) >> PAGE_SHIFT)].any():
        raise ModelInvariantError(f"vmap: remapping already mapped page in [{addr:#x}, {end:#x})")
    arch.arch_enter_lazy_mmu_mode()
    try:
        a = addr
        while a < end:
            size = arch.arch_vmap_pte_range_map_size(a, end, pfn, max_page_shift)
            if size != PAGE_SIZE:
                arch.set_huge_pte_at_kernel(a, table_pa, pfn, size)
            else:
                i = (a >> PAGE_SHIFT) & 0x1FF
                arch.pt_store_batch(table_pa, slice(i, i + 1), arch.mk_kernel_ptes([pfn]))
                arch.queue_pte_barriers()
            pfn += size >> PAGE_SHIFT
            a += size
    finally:
        arch.arch_leave_lazy_mmu_mode()
    return 0


def vmap_range_noflush(k: Kernel, addr: int, end: int, pfn: int, max_page_shift: int) -> int:
    """``vmap_range_noflush``: map [addr, end) to the physically contiguous pages from
    ``pfn``, a 2 MiB block where ``vmap_try_huge_pmd`` allows, else through
    :func:`vmap_pte_range` per PMD; 0 or -ENOMEM."""
    a = addr
    while a < end:
        nxt = min(end, (a | (PMD_SIZE - 1)) + 1)
        if (
            max_page_shift >= PMD_SHIFT
            and k.arch.arch_vmap_pmd_supported()
            and nxt - a == PMD_SIZE
            and not a & (PMD_SIZE - 1)
            and not (pfn << PAGE_SHIFT) & (PMD_SIZE - 1)
        ):
            ret = vmap_try_huge_pmd(k, a, pfn)
        else:
            ret = vmap_pte_range(k, a, nxt, pfn, max_page_shift)
        if ret:
            return ret
        pfn += (nxt - a) >> PAGE_SHIFT
        a = nxt
    return 0


def vmap_pages_range_noflush(k: Kernel, addr: int, pfns: list[int], page_shift: int) -> int:
    """``__vmap_pages_range_noflush``: with ``page_shift == PAGE_SHIFT`` the small-page
    walk; otherwise one :func:`vmap_range_noflush` per ``1 << page_shift`` chunk (its own
    walk and lazy-MMU section), each chunk's pages being physically contiguous."""
    if page_shift == PAGE_SHIFT:
        return vmap_pages_range(k, addr, pfns)
    step = 1 << (page_shift - PAGE_SHIFT)
    for i in range(0, len(pfns), step):
        a = addr + (i << PAGE_SHIFT)
        ret = vmap_range_noflush(k, a, a + (1 << page_shift), pfns[i], page_shift)
        if ret:
            return ret
    return 0


def vmap_try_huge_pmd(k: Kernel, addr: int, pfn: int) -> int:
    """``vmap_try_huge_pmd`` + ``pmd_set_huge``: one 2 MiB block; 0 or -ENOMEM."""
    ptr = _entry_alloc(k, addr, 2)
    if ptr is None:
        return -12
    if k.arch.read_entry(ptr):
        raise ModelInvariantError(f"vmap: PMD for {addr:#x} not empty (stale PTE table)")
    k.arch.set_pmd(ptr, k.arch.mk_kernel_pmd_block(pfn))
    return 0


def vunmap_range_noflush(k: Kernel, start: int, end: int) -> None:
    """``vunmap_range_noflush``: clear leaves (PTEs batched per table in a lazy-MMU
    section, PMD blocks with ``pmd_clear_huge``); tables are kept."""
    arch = k.arch
    a = start
    while a < end:
        found = _entry_lookup(k, a)
        if found is None:
            a += PAGE_SIZE
            continue
        level, ptr = found
        if level < 3:
            arch.set_pmd(ptr, 0)  # pmd_clear_huge / pud_clear_huge
            a = (a | ((1 << (PAGE_SHIFT + 9 * (3 - level))) - 1)) + 1
            continue
        table_pa = arch.entry_pa(ptr) & ~0xFFF
        i0 = (a >> PAGE_SHIFT) & 0x1FF
        i1 = min(512, i0 + ((end - a) >> PAGE_SHIFT))
        arch.arch_enter_lazy_mmu_mode()
        try:
            arch.pt_store_batch(table_pa, slice(i0, i1), 0)  # ptep_get_and_clear loop
        finally:
            arch.arch_leave_lazy_mmu_mode()
        a += (i1 - i0) << PAGE_SHIFT


# -- vmalloc / vfree -------------------------------------------------------------------------
#: ``vm_area_alloc_pages``: at most this many pages per ``alloc_pages_bulk`` call.
BULK_REQUEST_MAX = 100


def vm_area_alloc_pages(k: Kernel, order: int, nr_pages: int) -> list[int] | None:
    """``vm_area_alloc_pages``: ``nr_pages`` pages in blocks of ``order``, each high-order
    block ``split_page``d into order-0 pages (so vfree frees them one by one); the
    pfns, or None after freeing what was taken.

    Order 0 goes through the bulk allocator first, as Linux: ``alloc_pages_bulk`` calls
    of at most 100 pages (``nr_pages_request``), and when a call comes back short the
    rest falls back to one ``alloc_pages`` each (the slow path with reclaim)."""
    pa = k.page_alloc
    got: list[int] = []
    if not order:
        while len(got) < nr_pages:
            want = min(BULK_REQUEST_MAX, nr_pages - len(got))
            plan = pa.plan_bulk(want)
            taken = sum(n for _, _, n in plan)
            if taken < want or not taken:
                break  # short: the single-page fallback below
            pfns = pa.alloc_pages_bulk(GFP_KERNEL, plan, bulk_call=True)
            for p in pfns:
                pa.memmap.page(p).owner = "vmalloc"
            got.extend(pfns)
    while len(got) < nr_pages:
        pfn = pa.alloc_pages(GFP_KERNEL, order, owner="vmalloc")
        if pfn is None:
            for p in got:
                pa.free_pages(p, 0)
            return None
        if order:
            pa.split_page(pfn, order)
        got.extend(range(pfn, pfn + (1 << order)))
    return got


def vmalloc(k: Kernel, size: int, huge: bool = False) -> int:
    """``vmalloc`` (``vmalloc_huge`` with ``huge``, i.e. ``VM_ALLOW_HUGE_VMAP``):
    ``__vmalloc_node_range_noprof``; the area's address, or 0 on failure.

    With ``huge`` the mapping shift is PMD_SHIFT from 2 MiB when the arch supports PMD
    blocks, else ``arch_vmap_pte_supported_shift(size)``; if the huge attempt fails
    (area or pages), it is retried once with small pages (the ``fail:`` label)."""
    if size <= 0:
        return 0
    real_size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    shift = PAGE_SHIFT
    if huge:
        if k.arch.arch_vmap_pmd_supported() and size >= PMD_SIZE:
            shift = PMD_SHIFT
        else:
            shift = k.arch.arch_vmap_pte_supported_shift(size)
    if shift > PAGE_SHIFT:
        addr = _vmalloc_area(k, real_size, shift)
        if addr:
            return addr
        k.counters["vmalloc_huge_fallback"] += 1
    return _vmalloc_area(k, real_size, PAGE_SHIFT)


def _vmalloc_area(k: Kernel, real_size: int, shift: int) -> int:
    """``__get_vm_area_node`` (size aligned to ``1 << shift``, a guard page after it,
    aligned to ``1 << shift``) + ``__vmalloc_area_node`` (pages of order
    ``shift - PAGE_SHIFT``, ``vmap_pages_range`` with ``page_shift = shift``)."""
    unit = 1 << shift
    size = (real_size + unit - 1) & ~(unit - 1)
    va = alloc_vmap_area(k, size + PAGE_SIZE, max(unit, PAGE_SIZE), "vmalloc")
    if va is None:
        return 0
    pfns = vm_area_alloc_pages(k, shift - PAGE_SHIFT, size >> PAGE_SHIFT)
    if pfns is None or vmap_pages_range_noflush(k, va.start, pfns, shift):
        _undo(k, va, None if pfns is None else [(p, 0) for p in pfns])
        return 0
    va.pages, va.nr_pages = [(p, 0) for p in pfns], len(pfns)
    va.huge = shift > PAGE_SHIFT
    k.counters["vmalloc"] += 1
    if va.huge:
        k.counters["vmalloc_huge"] += 1
    k.counters["vmalloc_page"] += len(pfns)
    return va.start


def _undo(k: Kernel, va: VmapArea, pages: list[tuple[int, int]] | None) -> None:
    vunmap_range_noflush(k, va.start, va.end)
    for pfn, order in pages or []:
        k.page_alloc.free_pages(pfn, order)
    del vmap_state(k).busy[va.start]
    free_vmap_area_noflush(k, va)


def _take_area(k: Kernel, addr: int, kind: str) -> VmapArea:
    st = vmap_state(k)
    va = st.busy.get(addr)
    if va is None or va.kind != kind:
        raise ModelInvariantError(f"{kind}: trying to free nonexistent area {addr:#x}")
    del st.busy[addr]
    return va


def vfree(k: Kernel, addr: int) -> None:
    """``vfree``: unmap (no flush), free the pages, queue the area for the lazy purge."""
    if not addr:
        return
    va = _take_area(k, addr, "vmalloc")
    vunmap_range_noflush(k, va.start, va.end)
    for pfn, order in va.pages:
        k.page_alloc.free_pages(pfn, order)
    k.counters["vfree"] += 1
    free_vmap_area_noflush(k, va)


def vm_map_ram(k: Kernel, pfns: list[int]) -> int:
    """``vm_map_ram``: map existing pages contiguously; the address, or 0 on failure."""
    if not pfns:
        return 0
    va = alloc_vmap_area(k, len(pfns) << PAGE_SHIFT, PAGE_SIZE, "vm_map_ram")
    if va is None:
        return 0
    if vmap_pages_range(k, va.start, list(pfns)):
        _undo(k, va, None)
        return 0
    va.nr_pages = len(pfns)
    k.counters["vm_map_ram"] += 1
    return va.start


def vm_unmap_ram(k: Kernel, addr: int, count: int) -> None:
    """``vm_unmap_ram``: unmap ``count`` pages mapped by :func:`vm_map_ram` (lazy flush)."""
    va = _take_area(k, addr, "vm_map_ram")
    if count != va.nr_pages:
        k.warn("vm_unmap_ram", f"count {count} != mapped {va.nr_pages}")
    vunmap_range_noflush(k, va.start, va.end)
    k.counters["vm_unmap_ram"] += 1
    free_vmap_area_noflush(k, va)


def find_vmap_area(k: Kernel, addr: int) -> VmapArea | None:
    """``find_vmap_area``: the busy area containing ``addr``."""
    for va in vmap_state(k).busy.values():
        if va.start <= addr < va.end:
            return va
    return None
