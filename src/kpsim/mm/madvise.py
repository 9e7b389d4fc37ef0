"""madvise: ``MADV_DONTNEED`` (with PT_RECLAIM), ``MADV_HUGEPAGE``/``MADV_NOHUGEPAGE``,
``MADV_DONTFORK``/``MADV_DOFORK``, ``MADV_WIPEONFORK``/``MADV_KEEPONFORK``
(``mm/madvise.c``, ``mm/pt_reclaim.c``).

``MADV_DONTNEED`` zaps each VMA's part of the range separately
(``zap_page_range_single``); with PT_RECLAIM on (``MmContext.pt_reclaim``, default
from the machine's ``pt_reclaim`` option) the PTE table of every 2 MiB slot lying
wholly inside that part is freed; PMD and PUD tables never are (pt-lifecycle.md
rule 4). THPs wholly inside go with their deposited table (rule 2) either way.
The other advice sets or clears VMA flags (splitting and merging VMAs); fork reads
``VM_DONTCOPY`` and ``VM_WIPEONFORK``.

Left out: every other advice, the PT_RECLAIM trylock race with concurrent faults.
"""

from __future__ import annotations

import errno

from kpsim.mm import memory as m
from kpsim.mm.mm_types import PAGE_SIZE, MmStruct, SyscallError, VmFlags
from kpsim.mm.mmap import isolate, merge_range, page_align

MADV_DONTNEED = 4
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
ADVICE = {
    "dontneed": MADV_DONTNEED,
    "hugepage": MADV_HUGEPAGE,
    "nohugepage": MADV_NOHUGEPAGE,
    "dontfork": MADV_DONTFORK,
    "dofork": MADV_DOFORK,
    "wipeonfork": MADV_WIPEONFORK,
    "keeponfork": MADV_KEEPONFORK,
}
#: advice that sets (first) or clears (second) VMA flags (``madvise_vma_behavior``)
_FLAG_ADVICE = {
    MADV_HUGEPAGE: (VmFlags.HUGEPAGE, VmFlags.NOHUGEPAGE),
    MADV_NOHUGEPAGE: (VmFlags.NOHUGEPAGE, VmFlags.HUGEPAGE),
    MADV_DONTFORK: (VmFlags.DONTCOPY, VmFlags.NONE),
    MADV_DOFORK: (VmFlags.NONE, VmFlags.DONTCOPY),
    MADV_WIPEONFORK: (VmFlags.WIPEONFORK, VmFlags.NONE),
    MADV_KEEPONFORK: (VmFlags.NONE, VmFlags.WIPEONFORK),
}


def madvise(mm: MmStruct, start: int, length: int, advice: int) -> None:
    """``do_madvise``; ``-ENOMEM`` (after acting on the mapped parts) if there are holes."""
    if start & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL, "madvise: unaligned address")
    end = start + page_align(length)
    if end == start:
        return
    vmas = mm.overlapping(start, end)
    covered = sum(min(v.end, end) - max(v.start, start) for v in vmas)
    if advice == MADV_DONTNEED:
        for vma in vmas:
            madvise_dontneed(mm, max(start, vma.start), min(end, vma.end))
    elif advice in _FLAG_ADVICE:
        on, off = _FLAG_ADVICE[advice]
        if advice == MADV_WIPEONFORK and any(v.file is not None or v.shared for v in vmas):
            raise SyscallError(errno.EINVAL, "madvise: MADV_WIPEONFORK needs private anonymous")
        for vma in isolate(mm, start, end):
            vma.flags = (vma.flags & ~off) | on
        merge_range(mm, start, end)
    else:
        raise SyscallError(errno.EINVAL, f"madvise: advice {advice} not modelled")
    if covered != end - start:
        raise SyscallError(errno.ENOMEM, "madvise: range not fully mapped")


def madvise_dontneed(mm: MmStruct, start: int, end: int) -> int:
    """``madvise_dontneed_single_vma``: zap [start, end) of one VMA (rule 4)."""
    return m.zap_page_range(mm, start, end, reclaim_pt=mm.ctx.pt_reclaim)
