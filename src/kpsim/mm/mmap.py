"""mmap, munmap, brk, mprotect and mremap: ``mm/mmap.c``, ``mm/vma.c``, ``mm/mprotect.c``,
``mm/mremap.c``.

- ``mmap``: top-down placement below ``mmap_base`` (2 MiB-aligned for anonymous
  mappings whose length is a multiple of 2 MiB, as ``thp_get_unmapped_area``),
  ``MAP_FIXED`` (replaces: the old range is unmapped first), ``MAP_FIXED_NOREPLACE``
  (``-EEXIST``), ``MAP_NORESERVE``, ``MAP_POPULATE`` (populated a PTE table at a time);
  no table is allocated by mmap itself. Adjacent compatible VMAs merge.
- ``munmap``: split, detach, zap, then ``free_pgtables`` with floor = end of the
  previous VMA and ceiling = start of the next (pt-lifecycle.md rule 3).
- ``mprotect``: ``change_protection`` a PTE table at a time in a lazy-MMU section;
  never allocates or frees a table (rule 5).
- ``mremap``: shrink, grow in place, or move (``move_page_tables``: destination tables
  allocated per extent as Linux does, whole PTE/PMD tables relinked when aligned;
  the source is then unmapped by rule 3: rule 6).

Left out: file ``->mmap`` hooks, VM_ACCOUNT/overcommit, stack guard gaps, MREMAP_DONTUNMAP,
mlock, hugetlb.
"""

from __future__ import annotations

import errno
from contextlib import nullcontext
from typing import Final

import numpy as np

from kpsim.errors import OutOfMemory
from kpsim.mm import memory as m
from kpsim.mm.mm_types import (
    ANON,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    SPAN_SHIFT,
    FileRef,
    MmStruct,
    SyscallError,
    Vma,
    VmFlags,
)
from kpsim.mm.mmu_gather import MmuGather

PROT_NONE: Final = 0
PROT_READ: Final = 1
PROT_WRITE: Final = 2
PROT_EXEC: Final = 4
MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_NORESERVE: Final = 0x4000
MAP_POPULATE: Final = 0x8000
MAP_FIXED_NOREPLACE: Final = 0x100000
MREMAP_MAYMOVE: Final = 1
MREMAP_FIXED: Final = 2
_PROT_FLAGS: Final = VmFlags.READ | VmFlags.WRITE | VmFlags.EXEC
#: ``VM_DATA_DEFAULT_FLAGS`` of an anonymous read-write area (heap, stack)
VM_DATA_DEFAULT: Final = (
    VmFlags.READ
    | VmFlags.WRITE
    | VmFlags.MAYREAD
    | VmFlags.MAYWRITE
    | VmFlags.MAYEXEC
    | VmFlags.ANON
)
_NO_MERGE: Final = VmFlags.NONE
_VM_READ: Final = int(VmFlags.READ)
_VM_WRITE: Final = int(VmFlags.WRITE)
_VM_EXEC: Final = int(VmFlags.EXEC)
_VM_MAY: Final = int(VmFlags.MAYREAD | VmFlags.MAYWRITE | VmFlags.MAYEXEC)
_VM_SHARED_MAYSHARE: Final = int(VmFlags.SHARED | VmFlags.MAYSHARE)
_VM_ANON: Final = int(VmFlags.ANON)
_VM_NORESERVE: Final = int(VmFlags.NORESERVE)
_VM_ACCOUNT: Final = int(VmFlags.ACCOUNT)
_VM_NORESERVE_SHARED_WRITE: Final = int(VmFlags.NORESERVE | VmFlags.SHARED | VmFlags.WRITE)


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def prot_to_vm(prot: int) -> VmFlags:
    f = 0  # plain ints, one VmFlags at the end (IntFlag arithmetic is slow)
    if prot & PROT_READ:
        f |= _VM_READ
    if prot & PROT_WRITE:
        f |= _VM_WRITE
    if prot & PROT_EXEC:
        f |= _VM_EXEC
    return VmFlags(f)


def _einval(what: str) -> SyscallError:
    return SyscallError(errno.EINVAL, what)


# --------------------------------------------------------------------------- VMAs


def split_vma(mm: MmStruct, vma: Vma, addr: int) -> Vma:
    """``__split_vma``: cut ``vma`` at ``addr``; return the upper part (both stay in mm)."""
    m.split_huge_pmd_at(mm, addr)  # vma_adjust_trans_huge
    upper = Vma(
        addr,
        vma.end,
        vma.flags,
        vma.file,
        vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT),
        vma.anon_vma,
        vma.name,
    )
    vma.end = addr
    mm.insert_vma(upper)
    return upper


def isolate(mm: MmStruct, start: int, end: int) -> list[Vma]:
    """Split the VMAs at ``start`` and ``end``; return those inside [start, end)."""
    out = []
    for vma in mm.overlapping(start, end):
        if vma.start < start:
            vma = split_vma(mm, vma, start)
        if vma.end > end:
            split_vma(mm, vma, end)
        out.append(vma)
    return out


def _mergeable(a: Vma, b: Vma) -> bool:
    """``is_mergeable_vma`` + ``is_mergeable_anon_vma``: a ends where b starts."""
    if a.end != b.start or a.flags != b.flags or a.name != b.name or a.file != b.file:
        return False
    if a.pgoff + ((a.end - a.start) >> PAGE_SHIFT) != b.pgoff:  # anonymous VMAs too
        return False
    return a.anon_vma is None or b.anon_vma is None or a.anon_vma == b.anon_vma


def vma_merge(mm: MmStruct, vma: Vma) -> Vma:
    """Merge ``vma`` with compatible neighbours (``vma_merge_existing_range``)."""
    i = mm.vma_index(vma)
    if i + 1 < len(mm.vmas) and _mergeable(vma, mm.vmas[i + 1]):
        nxt = mm.vmas[i + 1]
        mm.remove_vma(nxt)
        vma.end = nxt.end
        vma.anon_vma = vma.anon_vma or nxt.anon_vma
    if i > 0 and _mergeable(mm.vmas[i - 1], vma):
        prev = mm.vmas[i - 1]
        mm.remove_vma(vma)
        prev.end = vma.end
        prev.anon_vma = prev.anon_vma or vma.anon_vma
        return prev
    return vma


def merge_range(mm: MmStruct, start: int, end: int) -> None:
    """Merge every compatible pair of adjacent VMAs touching [start, end]."""
    i = 0
    while True:
        vmas = mm.overlapping(max(start - 1, 0), end + 1)
        if i + 1 >= len(vmas):
            return
        if _mergeable(vmas[i], vmas[i + 1]):
            vma_merge(mm, vmas[i])
        else:
            i += 1


# --------------------------------------------------------------------------- mmap


def get_unmapped_area(mm: MmStruct, length: int, hint: int | None, thp_align: bool) -> int:
    """Top-down search below ``mmap_base`` (``vm_unmapped_area`` + THP alignment)."""
    if hint is not None:
        hint = page_align(hint)
        if hint + length <= mm.ctx.task_size and not mm.overlapping(hint, hint + length):
            return hint
    want = length + (PMD_SIZE if thp_align else 0)
    top = mm.mmap_base
    for vma in reversed(mm.vmas):
        if vma.start >= top:
            continue
        if vma.end <= top - want:
            break
        top = min(top, vma.start)
    if top - want < PAGE_SIZE:
        if thp_align:
            return get_unmapped_area(mm, length, None, False)
        raise SyscallError(errno.ENOMEM, "no room for the mapping")
    addr = top - length
    return addr & ~(PMD_SIZE - 1) if thp_align else addr


def _thp_align(file: FileRef | None, shared: bool, length: int) -> bool:
    """``__get_unmapped_area``: a private anonymous request without a hint whose length
    is a multiple of 2 MiB is placed THP-aligned (``thp_get_unmapped_area_vmflags``),
    whatever the THP mode; shared anonymous memory goes to shmem's placement, which
    aligns only when shmem THPs are on (kpsim: never). mremap's moves ask the same way."""
    return file is None and not shared and length % PMD_SIZE == 0


def mmap(
    mm: MmStruct,
    addr: int | None,
    length: int,
    prot: int,
    flags: int,
    file: FileRef | None = None,
    pgoff: int = 0,
) -> int:
    """``do_mmap``: map [addr, addr+length); return the address."""
    length = page_align(length)
    if length == 0 or length > mm.ctx.task_size:
        raise _einval("mmap: bad length")
    shared = bool(flags & MAP_SHARED)
    if not shared and not flags & MAP_PRIVATE:
        raise _einval("mmap: neither MAP_SHARED nor MAP_PRIVATE")
    fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
    if fixed:
        if addr is None or addr & (PAGE_SIZE - 1) or addr + length > mm.ctx.task_size:
            raise _einval("mmap: bad fixed address")
        if (
            flags & MAP_FIXED_NOREPLACE
            and not flags & MAP_FIXED
            and mm.overlapping(addr, addr + length)
        ):
            raise SyscallError(errno.EEXIST, "mmap: MAP_FIXED_NOREPLACE over a mapping")
        munmap(mm, addr, length)
    else:
        thp_align = addr is None and _thp_align(file, shared, length)
        addr = get_unmapped_area(mm, length, addr, thp_align)
    vm = int(prot_to_vm(prot)) | _VM_MAY  # plain ints until the Vma is made
    if shared:
        vm |= _VM_SHARED_MAYSHARE
        if file is None:  # shared anonymous memory is shmem: a file of its own
            file = mm.ctx.new_file(length)
    if file is None:
        vm |= _VM_ANON
        pgoff = addr >> PAGE_SHIFT  # do_mmap: a private anonymous VMA's pgoff is its address
    if flags & MAP_NORESERVE:
        vm |= _VM_NORESERVE
    if vm & _VM_NORESERVE_SHARED_WRITE == _VM_WRITE:
        vm |= _VM_ACCOUNT  # accountable_mapping: merging compares it
    vma_merge(mm, _insert(mm, Vma(addr, addr + length, VmFlags(vm), file, pgoff)))
    if flags & MAP_POPULATE:
        # Linux's mm_populate() ignores a failure; kpsim lets OutOfMemory out (the
        # mapping stays, as in Linux) so that no caller measures a half-populated range
        # as if it were whole (docs/fidelity.md, "Fault injection").
        populate_range(mm, addr, addr + length, write=bool(prot & PROT_WRITE) and not shared)
    return addr


def _insert(mm: MmStruct, vma: Vma) -> Vma:
    mm.insert_vma(vma)
    return vma


def populate_range(mm: MmStruct, start: int, end: int, *, write: bool) -> None:
    """``__mm_populate``: fault in [start, end), a PTE table at a time.

    Each missing entry is what one GUP fault would install (rule 1: the same tables);
    the entries of one table are written with one batch. THP-eligible slots and file
    mappings fault page by page through :func:`~kpsim.mm.memory.handle_mm_fault`.
    Inaccessible (``PROT_NONE``) VMAs are skipped: GUP without ``FOLL_FORCE`` fails on
    them and ``__mm_populate`` ignores the error, so they get no table.
    """
    for vma in mm.overlapping(start, end):
        if not vma.flags & _PROT_FLAGS:  # populate_vma_page_range: PROT_NONE is skipped
            continue
        s, e = max(start, vma.start), min(end, vma.end)
        while s < e:
            nxt = min((s | (PMD_SIZE - 1)) + 1, e)
            if (
                vma.file is None
                and not vma.shared
                and not m.thp_eligible(mm.ctx, vma, s)
                and (s >> 21) not in mm.thp
            ):
                m.populate_pte_range(mm, vma, s, nxt, write)
            else:
                for addr in range(s, nxt, PAGE_SIZE):
                    m.handle_mm_fault(mm, addr, write)
            s = nxt


# --------------------------------------------------------------------------- munmap


def munmap(mm: MmStruct, start: int, length: int) -> None:
    """``do_vmi_munmap``: detach the VMAs, zap them, free tables by rule 3."""
    if start & (PAGE_SIZE - 1) or start >= mm.ctx.task_size:
        raise _einval("munmap: unaligned address")
    end = start + page_align(length)
    if end == start or end > mm.ctx.task_size:
        raise _einval("munmap: bad length")
    victims = isolate(mm, start, end)
    if not victims:
        return
    for vma in victims:
        mm.remove_vma(vma)
    prev, nxt = mm.neighbours(victims[0].start, victims[-1].end)
    tlb = MmuGather(mm)  # unmap_region: one gather for the zap and the table frees
    m.unmap_vmas(mm, victims, tlb)
    m.free_pgtables(
        mm,
        victims[0].start,
        victims[-1].end,
        prev.end if prev else 0,
        nxt.start if nxt else None,
        tlb,
    )
    tlb.finish()


def brk(mm: MmStruct, new: int) -> int:
    """``sys_brk``: grow or shrink the heap; return the new (or unchanged) break."""
    if new < mm.start_brk:
        return mm.brk
    old_end, new_end = page_align(mm.brk), page_align(new)
    if new_end < old_end:
        munmap(mm, new_end, old_end - new_end)
    elif new_end > old_end:
        if mm.overlapping(old_end, new_end + PAGE_SIZE):  # a page's gap below the next VMA
            return mm.brk
        vm = VM_DATA_DEFAULT | VmFlags.ACCOUNT  # do_brk_flags
        heap = Vma(old_end, new_end, vm, pgoff=old_end >> PAGE_SHIFT, name="[heap]")
        vma_merge(mm, _insert(mm, heap))
    mm.brk = new
    return new


# --------------------------------------------------------------------------- mprotect


def mprotect(mm: MmStruct, start: int, length: int, prot: int) -> None:
    """``do_mprotect_pkey``: new VMA flags, then ``change_protection`` (rule 5)."""
    if start & (PAGE_SIZE - 1):
        raise _einval("mprotect: unaligned address")
    end = start + page_align(length)
    if end == start:
        return
    covered = sum(min(v.end, end) - max(v.start, start) for v in mm.overlapping(start, end))
    if covered != end - start:
        raise SyscallError(errno.ENOMEM, "mprotect: range not fully mapped")
    newbits = prot_to_vm(prot)
    for vma in isolate(mm, start, end):
        vma.flags = _mprotect_flags(vma, newbits)
        change_protection(mm, vma, vma.start, vma.end)
    merge_range(mm, start, end)


def _mprotect_flags(vma: Vma, newbits: VmFlags) -> VmFlags:
    """``mprotect_fixup``'s new ``vm_flags``: a private mapping made writable is charged
    (``VM_ACCOUNT``); an anonymous one made read-only before any page was created
    (no ``anon_vma``) is uncharged. ``VM_ACCOUNT`` decides merges, hence which VMAs
    ``MADV_DONTNEED``'s PT_RECLAIM and fork see."""
    old = vma.flags
    new = (old & ~_PROT_FLAGS) | newbits
    if new & VmFlags.WRITE:
        if not old & (VmFlags.ACCOUNT | VmFlags.WRITE | VmFlags.SHARED | VmFlags.NORESERVE):
            new |= VmFlags.ACCOUNT
    elif old & VmFlags.ACCOUNT and vma.file is None and vma.anon_vma is None:
        new &= ~VmFlags.ACCOUNT
    return new


def change_protection(mm: MmStruct, vma: Vma, start: int, end: int) -> int:
    """Rewrite every entry in [start, end) with the VMA's new protection."""
    arch = mm.ctx.arch
    prot = vma.page_prot(arch)
    pages = 0
    for slot in m.slots_in(mm.thp, start >> 21, (end - 1) >> 21) if mm.thp else ():
        ptr = m.entry_ptr(mm, m.table_pa(mm, 2, slot << 21) or 0, 2, slot << 21)
        v = m.read_entry(mm, m.table_pa(mm, 2, slot << 21) or 0, 2, slot << 21)
        arch.pt_store(ptr, arch.pte_modify(v, prot) & ~2)  # change_huge_pmd (stays a block)
        pages += 512
    for slot in m.slots_in(mm.tables[3], start >> 21, (end - 1) >> 21):
        pages += change_pte_range(mm, vma, slot, start, end, prot)
    arch.flush_tlb_range(mm.asid, start, end)
    return pages


def change_pte_range(mm: MmStruct, vma: Vma, slot: int, start: int, end: int, prot: int) -> int:
    ctx, arch = mm.ctx, mm.ctx.arch
    tpa, a, arr, nz = m.pte_table_slice(mm, slot, start, end)
    if nz.size == 0:
        return 0
    new = arch.ptes_modify(arr[nz], prot)
    if int(vma.flags) & _VM_WRITE and not vma.shared:  # MM_CP_TRY_CHANGE_WRITABLE
        idx = arch.ptes_pfn(new) - ctx.base_pfn
        excl = (ctx.kind[idx] == ANON) & (ctx.mapcount[idx] == 1) & arch.ptes_present(new)
        if excl.any():
            new = np.where(excl, arch.ptes_mkwrite(new), new)
    arch.arch_enter_lazy_mmu_mode()
    try:
        arch.pt_store_batch(tpa, nz + a, new)
    finally:
        arch.arch_leave_lazy_mmu_mode()
    return int(nz.size)


# --------------------------------------------------------------------------- mremap


def mremap(
    mm: MmStruct,
    old: int,
    old_len: int,
    new_len: int,
    flags: int = MREMAP_MAYMOVE,
    new_addr: int | None = None,
) -> int:
    """``sys_mremap``: shrink, grow in place, or move; return the new address.

    As Linux 6.18 does (measured): ``old`` must be mapped (``-EFAULT``); a shrink in
    place unmaps the tail whatever VMAs it spans; growing needs the range inside one
    VMA; with ``MREMAP_FIXED`` the destination is unmapped, then a shrinking tail; a
    range of several VMAs or with gaps moves VMA by VMA, each unmapping only its own
    destination, only when the length is unchanged (``remap_move``, since 6.17).
    """
    if old & (PAGE_SIZE - 1):
        raise _einval("mremap: unaligned address")
    old_len, new_len = page_align(old_len), page_align(new_len)
    if new_len == 0 or (flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE):
        raise _einval("mremap: bad arguments")
    fixed = bool(flags & MREMAP_FIXED)
    if fixed:
        assert new_addr is not None
        if new_addr & (PAGE_SIZE - 1) or (new_addr < old + old_len and old < new_addr + new_len):
            raise _einval("mremap: bad new address")
    vma = mm.find_vma(old)
    if vma is None or vma.start > old:
        raise SyscallError(errno.EFAULT, "mremap: old address is not mapped")
    if fixed:
        assert new_addr is not None
        if old_len == new_len and old + old_len > vma.end:  # a pure move may span VMAs
            return _move_vmas(mm, old, old_len, new_addr)
        munmap(mm, new_addr, new_len)
        if old_len > new_len:
            munmap(mm, old + new_len, old_len - new_len)
            old_len = new_len
        vma = mm.find_vma(old)  # the unmaps may have split it
        assert vma is not None and vma.start <= old
        if old + old_len > vma.end:
            raise SyscallError(errno.EFAULT, "mremap: old range is not one mapping")
        return move_vma(mm, vma, old, old_len, new_len, new_addr)
    if new_len <= old_len:
        if new_len < old_len:
            munmap(mm, old + new_len, old_len - new_len)
        return old
    if old + old_len > vma.end:
        raise SyscallError(errno.EFAULT, "mremap: old range is not one mapping")
    if (
        old + old_len == vma.end
        and not mm.overlapping(vma.end, old + new_len)
        and old + new_len <= mm.ctx.task_size
    ):
        vma.end = old + new_len  # vma_expand
        vma_merge(mm, vma)
        return old
    if not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.ENOMEM, "mremap: cannot grow in place")
    new_addr = get_unmapped_area(mm, new_len, None, _thp_align(vma.file, vma.shared, new_len))
    return move_vma(mm, vma, old, old_len, new_len, new_addr)


def _move_vmas(mm: MmStruct, old: int, length: int, new: int) -> int:
    """``remap_move``: move every VMA piece of [old, old+length) to the same offset from
    ``new``, in address order, each as its own ``MREMAP_FIXED`` move (its destination
    unmapped, then :func:`move_vma`). What lies at the destination of a gap stays
    (measured: a mapping there survives)."""
    for start, end in [(v.start, v.end) for v in mm.overlapping(old, old + length)]:
        s, e = max(start, old), min(end, old + length)
        dest = new + (s - old)
        munmap(mm, dest, e - s)
        piece = mm.find_vma(s)
        assert piece is not None and piece.start <= s
        move_vma(mm, piece, s, e - s, e - s, dest)
    return new


def move_vma(mm: MmStruct, vma: Vma, old: int, old_len: int, new_len: int, new: int) -> int:
    """``move_vma``: new VMA, ``move_page_tables``, then unmap the old range (rule 3)."""
    moved = min(old_len, new_len)
    src = isolate(mm, old, old + old_len)[0]
    dst = Vma(new, new + new_len, src.flags, src.file, src.pgoff, src.anon_vma, src.name)
    mm.insert_vma(dst)
    try:
        move_page_tables(mm, old, new, moved)
    except OutOfMemory:
        _move_back(mm, old, new, moved)
        raise SyscallError(errno.ENOMEM, "mremap: page-table allocation failed") from None
    if new_len < old_len:
        pass  # the tail is unmapped with the rest of the old range below
    munmap(mm, old, old_len)
    vma_merge(mm, dst)
    return new


def _move_back(mm: MmStruct, old: int, new: int, moved: int) -> None:
    """``move_vma``'s error path: move the entries back from the new area to the old
    ("which will succeed since page tables still there") and unmap the new VMA; the
    old one was never removed. Fault injection is held off meanwhile, for that reason."""
    fi = mm.ctx.k.fault_inject
    with fi.suspended() if fi is not None else nullcontext():
        move_page_tables(mm, new, old, moved)
        dst = mm.find_vma(new)
        assert dst is not None and dst.start == new
        munmap(mm, new, dst.end - new)


def _extent(old: int, old_end: int, new: int, shift: int) -> int:
    """``get_extent``: the largest step that crosses no ``1 << shift`` boundary."""
    size = 1 << shift
    ext = min(((old + size) & ~(size - 1)) - old, old_end - old)
    return min(ext, ((new + size) & ~(size - 1)) - new)


def move_page_tables(mm: MmStruct, old: int, new: int, length: int) -> None:
    """Move the entries of [old, old+length) to ``new`` (``move_page_tables``)."""
    old_end = old + length
    while old < old_end:
        if (old >> 30) not in mm.tables[2]:  # get_old_pud: no PMD table, skip its slot
            step = min(((old >> 30) + 1 << 30) - old, old_end - old)
            old, new = old + step, new + step
            continue
        ext = _extent(old, old_end, new, 30)
        m.pxd_alloc(mm, 1, new)  # alloc_new_pud
        if ext == 1 << 30 and _move_pgt_entry(mm, 2, old, new):
            old, new = old + ext, new + ext
            continue
        ext = _extent(old, old_end, new, 21)
        slot = old >> 21
        if slot in mm.thp or slot in mm.tables[3]:
            m.pxd_alloc(mm, 2, new)  # alloc_new_pmd
            if slot in mm.thp and (ext != PMD_SIZE or not _move_pgt_entry(mm, 3, old, new)):
                m.__split_huge_pmd(mm, slot)
            elif ext == PMD_SIZE and _move_pgt_entry(mm, 3, old, new):
                pass
            if slot in mm.tables[3]:
                move_ptes(mm, old, new, ext)
        old, new = old + ext, new + ext


def _move_pgt_entry(mm: MmStruct, level: int, old: int, new: int) -> bool:
    """``move_normal_pmd``/``move_normal_pud``/``move_huge_pmd``: relink a whole table
    (or THP) of ``level`` from ``old`` to ``new`` if the destination entry is empty."""
    arch = mm.ctx.arch
    dst_parent = m.table_pa(mm, level - 1, new)
    src_parent = m.table_pa(mm, level - 1, old)
    assert dst_parent is not None and src_parent is not None
    if m.read_entry(mm, dst_parent, level - 1, new):
        return False
    v = m.read_entry(mm, src_parent, level - 1, old)
    sh = SPAN_SHIFT[level]
    so, sn = old >> sh, new >> sh
    arch.pt_store(m.entry_ptr(mm, src_parent, level - 1, old), 0)
    arch.flush_tlb_range(mm.asid, so << sh, (so + 1) << sh)
    arch.pt_store(m.entry_ptr(mm, dst_parent, level - 1, new), v)
    if level == 3 and so in mm.thp:
        mm.thp[sn] = mm.thp.pop(so)
        return True
    mm.tables[level][sn] = mm.tables[level].pop(so)
    if level == 2:  # the PTE tables and THPs below move with the PMD table
        for idx in (mm.tables[3], mm.thp):
            for s in [s for s in idx if s >> 9 == so]:
                idx[(sn << 9) | (s & 0x1FF)] = idx.pop(s)
    mm.ctx.k.counters["mremap_relink"] += 1
    return True


def move_ptes(mm: MmStruct, old: int, new: int, ext: int) -> None:
    """Move the entries of one extent (within one source and one destination table)."""
    arch = mm.ctx.arch
    src = mm.tables[3][old >> 21] << PAGE_SHIFT
    dst = m.pxd_alloc(mm, 3, new)  # pte_alloc
    a = (old >> PAGE_SHIFT) & 0x1FF
    n = ext >> PAGE_SHIFT
    arr = arch.read_table(src)[a : a + n]
    nz = arr.nonzero()[0]
    if nz.size == 0:
        return
    vals = arr[nz].copy()
    d0 = (new >> PAGE_SHIFT) & 0x1FF
    arch.arch_enter_lazy_mmu_mode()
    try:
        arch.pt_store_batch(src, nz + a, np.uint64(0))
        arch.pt_store_batch(dst, nz + d0, vals)
    finally:
        arch.arch_leave_lazy_mmu_mode()
    arch.flush_tlb_range(mm.asid, old, old + ext)
