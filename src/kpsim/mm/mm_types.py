"""User address spaces: ``struct mm_struct``, ``struct vm_area_struct`` and shared mm state.

Models ``include/linux/mm_types.h`` as far as page-table lifetimes care: an mm owns a
PGD (TTBR0 with an ASID), a sorted set of VMAs (the maple tree), and its counters:
``VmPTE`` (PTE + PMD + PUD tables, deposited THP tables included, no PGD;
pt-lifecycle.md §2.1) and RSS. The live tables of an mm are indexed per level by the
slot they span (``va >> 39`` for a PUD table, ``>> 30`` for PMD, ``>> 21`` for PTE):
an index over the tree in simulated RAM, which :func:`kpsim.mm.memory.check_tree`
cross-checks against the descriptors.

:class:`MmContext` holds what ``mm/`` keeps in globals for user memory: the zero page
and the huge zero page, a small page cache (one page per (file, offset)), per-page
map counts, ASIDs and anon_vma identities.

Left out: mm_users/mm_count beyond one owner, the maple tree's structure, anon_vma
chains (an anon_vma is an identity only), mlock, userfaultfd, VM_PFNMAP mappings.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from mypy_extensions import mypyc_attr

from kpsim.errors import KpsimError, ModelInvariantError, OutOfMemory
from kpsim.mm.arch_ops import ArchOps
from kpsim.mm.gfp import GFP_HIGHUSER_MOVABLE, GFP_PGTABLE_USER, Gfp
from kpsim.mm.kernel import Kernel

#: page_prot by architecture class, then by the VM_READ|VM_WRITE|VM_EXEC|VM_SHARED bits
#: (-1: not computed yet)
_PAGE_PROT: Final[dict[type, list[int]]] = {}

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
PMD_SIZE: Final = 1 << 21
HPAGE_PMD_ORDER: Final = 9
#: VA shift indexed at each level (0 = PGD .. 3 = PTE) and the span shift of a table.
LEVEL_SHIFT: Final = (39, 30, 21, 12)
SPAN_SHIFT: Final = (48, 39, 30, 21)
TASK_SIZE: Final = 1 << 48
MMAP_MIN_GAP: Final = 128 << 20
#: page kinds in :attr:`MmContext.kind`
ANON: Final = 0
FILE: Final = 1
ZERO: Final = 2
_PINNED: Final = 1 << 40  # map count bias of pages never freed by unmapping (zero pages, cache)
_GFP_PINNED: Final = GFP_HIGHUSER_MOVABLE | Gfp.ZERO


class VmFlags(enum.IntFlag):
    """``vm_flags`` bits that matter here (values as in ``include/linux/mm.h``)."""

    NONE = 0
    READ = 0x1
    WRITE = 0x2
    EXEC = 0x4
    SHARED = 0x8
    MAYREAD = 0x10
    MAYWRITE = 0x20
    MAYEXEC = 0x40
    MAYSHARE = 0x80
    GROWSDOWN = 0x100
    DONTCOPY = 0x20000
    WIPEONFORK = 0x2000000
    ACCOUNT = 0x100000
    NORESERVE = 0x200000
    HUGEPAGE = 0x20000000
    NOHUGEPAGE = 0x40000000
    ANON = 1 << 40  # kpsim: no vm_ops (vma_is_anonymous)


@mypyc_attr(native_class=False)  # the compiled core: a native class cannot be an OSError
class SyscallError(KpsimError, OSError):
    """A system call the simulated kernel refused, with Linux's errno."""

    def __init__(self, errno_: int, message: str) -> None:
        OSError.__init__(self, errno_, message)


class SegmentationFault(KpsimError):
    """A user access the kernel cannot resolve (``VM_FAULT_SIGSEGV``): SIGSEGV."""


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file (or shmem object) that can be mapped: an identity and a size."""

    id: int
    size: int


@dataclass(slots=True)
class Vma:
    """``vm_area_struct``: [start, end), flags, backing file and offset, anon_vma."""

    start: int
    end: int
    flags: VmFlags
    file: FileRef | None = None
    pgoff: int = 0
    anon_vma: int | None = None
    name: str = ""

    @property
    def shared(self) -> bool:
        return bool(int(self.flags) & 0x8)  # VM_SHARED, on ints (IntFlag ``&`` is slow)

    def page_prot(self, arch: ArchOps) -> int:
        """``vm_get_page_prot`` of the READ/WRITE/EXEC/SHARED bits (a pure function of
        the bits and the architecture: computed once per pair)."""
        f = int(self.flags) & 15  # plain ints: IntFlag arithmetic is slow on the fault path
        prots = _PAGE_PROT.get(type(arch))
        if prots is None:
            prots = _PAGE_PROT[type(arch)] = [-1] * 16
        prot = prots[f]
        if prot < 0:
            prot = arch.vm_get_page_prot(bool(f & 1), bool(f & 2), bool(f & 4), bool(f & 8))
            prots[f] = prot
        return prot


class MmContext:
    """The kernel-wide state of user memory on one machine (see module docstring)."""

    def __init__(
        self, k: Kernel, arch: ArchOps, *, pt_reclaim: bool | None = None, thp: str = "madvise"
    ) -> None:
        self.k = k
        self.arch = arch
        opts = k.options
        self.pt_reclaim = (
            bool(getattr(opts, "pt_reclaim", True)) if pt_reclaim is None else pt_reclaim
        )
        self.thp = thp  # transparent_hugepage/enabled: always, madvise or never
        self.thp_use_zero_page = True
        #: the top of user space (``TASK_SIZE``): the arch's if it says (x86-64: 47 bits)
        self.task_size: int = int(getattr(arch, "task_size", TASK_SIZE))
        pa = k.page_alloc
        self.base_pfn: int = pa.start_pfn
        n = pa.end_pfn - pa.start_pfn
        self.mapcount = np.zeros(n, dtype=np.int64)  # mappings (+ bias for pinned pages)
        self.kind = np.zeros(n, dtype=np.int8)
        #: the same two arrays as memoryviews, for one page at a time: a Python int in
        #: and out, without numpy's scalar objects (the fault paths)
        self.mapcount1 = self.mapcount.data
        self.kind1 = self.kind.data
        self.page_cache: dict[tuple[int, int], int] = {}
        self.next_mm_id = 1
        self.next_asid = 1
        #: ASIDs 1..asid_max (16-bit ASIDs; 0 is reserved), those of live mms, and the
        #: allocator generation (arch/arm64/mm/context.c)
        self.asid_max = 65535
        self.live_asids: set[int] = set()
        self.asid_generation = 1
        self.next_pid = 100
        self.next_anon_vma = 1
        self.next_file = 1
        self.idle: list[Any] = []
        self.zero_pfn = self._pinned_page(0, ZERO)
        self.huge_zero_pfn = self._pinned_page(HPAGE_PMD_ORDER, ZERO)

    def _pinned_page(self, order: int, kind: int) -> int:
        pfn = self.k.page_alloc.alloc_pages(_GFP_PINNED, order)
        if pfn is None:
            raise OutOfMemory("zero page")
        i = pfn - self.base_pfn
        if order == 0:
            self.mapcount[i] = _PINNED
            self.kind[i] = kind
        else:
            self.mapcount[i : i + (1 << order)] = _PINNED
            self.kind[i : i + (1 << order)] = kind
        return int(pfn)

    def new_file(self, size: int) -> FileRef:
        f = FileRef(self.next_file, size)
        self.next_file += 1
        return f

    def find_get_page(self, file: FileRef, pgoff: int) -> int:
        """The page-cache page of ``file`` at ``pgoff`` (read in, i.e. allocated, once)."""
        pfn = self.page_cache.get((file.id, pgoff))
        if pfn is None:
            pfn = self._pinned_page(0, FILE)
            self.page_cache[(file.id, pgoff)] = pfn
        return int(pfn)

    def drop_caches(self) -> int:
        """Free every page-cache page that no process maps; return how many."""
        freed = 0
        for key, pfn in list(self.page_cache.items()):
            if self.mapcount[pfn - self.base_pfn] == _PINNED:
                self.mapcount[pfn - self.base_pfn] = 0
                self.k.page_alloc.free_pages(pfn, 0)
                del self.page_cache[key]
                freed += 1
        return freed

    def alloc_asid(self) -> int:
        """A free ASID for a new mm (arm64 ``new_context``). When the counter wraps, a
        rollover begins a new generation and invalidates every TLB (``flush_context``:
        Linux makes each CPU flush its local TLB at its next context switch; the model
        flushes all at once), so entries a dead mm left behind under a reused ASID can
        never be hit. ASIDs of live mms are skipped (Linux keeps them as "reserved").

        Departure: Linux assigns ASIDs lazily at context switch and re-assigns live mms a
        new ASID after a rollover; kpsim assigns at mm creation and keeps it."""
        for _ in range(self.asid_max):
            asid = self.next_asid
            self.next_asid = asid % self.asid_max + 1
            if self.next_asid == 1:  # the counter wrapped: rollover
                self.asid_generation += 1
                self.k.counters["asid_rollover"] += 1
                self.arch.flush_tlb_all()
            if asid not in self.live_asids:
                self.live_asids.add(asid)
                return asid
        raise ModelInvariantError(f"no free ASID: {len(self.live_asids)} live address spaces")

    def free_asid(self, asid: int) -> None:
        """The mm is gone: its ASID may be reused (after the next rollover's flush)."""
        self.live_asids.discard(asid)

    def new_anon_vma(self) -> int:
        self.next_anon_vma += 1
        return self.next_anon_vma


class MmStruct:
    """``mm_struct``: PGD, ASID, VMAs, the per-level table index and counters."""

    __slots__ = (
        "asid",
        "brk",
        "ctx",
        "id",
        "mmap_base",
        "owner",
        "pgd_pfn",
        "rss_anon",
        "rss_file",
        "start_brk",
        "starts",
        "tables",
        "thp",
        "vmas",
    )

    def __init__(self, ctx: MmContext) -> None:
        self.ctx = ctx
        self.id = ctx.next_mm_id
        ctx.next_mm_id += 1
        self.owner = f"mm:{self.id}"
        pfn = ctx.k.pgtable.alloc_table(GFP_PGTABLE_USER, 0, self.owner)  # pgd_alloc
        if pfn is None:
            raise OutOfMemory("pgd_alloc")
        self.pgd_pfn: int = pfn
        self.asid = ctx.alloc_asid()
        self.vmas: list[Vma] = []
        self.starts: list[int] = []
        #: tables[level][slot] = pfn for levels 1 (PUD) .. 3 (PTE); tables[0] unused
        self.tables: tuple[dict[int, int], ...] = ({}, {}, {}, {})
        #: PMD-mapped THPs: 2 MiB slot -> pfn of the deposited PTE table
        self.thp: dict[int, int] = {}
        self.rss_anon = 0
        self.rss_file = 0
        self.mmap_base = ctx.task_size - MMAP_MIN_GAP
        self.start_brk = self.brk = 0x5555_6000_0000

    @property
    def pgd_pa(self) -> int:
        return self.pgd_pfn << PAGE_SHIFT

    # -- counters ------------------------------------------------------------------------
    def pgtables_pages(self) -> int:
        """``mm_pgtables_bytes / PAGE_SIZE``: what ``VmPTE`` reports, in pages."""
        t = self.tables
        return len(t[1]) + len(t[2]) + len(t[3]) + len(self.thp)

    def table_counts(self) -> dict[str, int]:
        t = self.tables
        return {
            "pgd": 1,
            "pud": len(t[1]),
            "pmd": len(t[2]),
            "pte": len(t[3]),
            "pte_deposited": len(self.thp),
        }

    # -- the VMA set -----------------------------------------------------------------------
    def find_vma(self, addr: int) -> Vma | None:
        """The first VMA ending above ``addr`` (``find_vma``)."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return self.vmas[i + 1] if i + 1 < len(self.vmas) else None

    def vma_index(self, vma: Vma) -> int:
        i = bisect.bisect_left(self.starts, vma.start)
        if i >= len(self.vmas) or self.vmas[i] is not vma:
            raise KpsimError(f"VMA {vma.start:#x} is not in mm {self.id}")
        return i

    def overlapping(self, start: int, end: int) -> list[Vma]:
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        out = []
        for v in self.vmas[i:]:
            if v.start >= end:
                break
            if v.end > start:
                out.append(v)
        return out

    def neighbours(self, start: int, end: int) -> tuple[Vma | None, Vma | None]:
        """(prev, next): the VMAs just below ``start`` and at or above ``end``."""
        i = bisect.bisect_left(self.starts, end)
        nxt = self.vmas[i] if i < len(self.vmas) else None
        j = bisect.bisect_right(self.starts, start - 1) - 1
        prev = self.vmas[j] if j >= 0 and self.vmas[j].end <= start else None
        return prev, nxt

    def insert_vma(self, vma: Vma) -> None:
        i = bisect.bisect_left(self.starts, vma.start)
        self.vmas.insert(i, vma)
        self.starts.insert(i, vma.start)

    def remove_vma(self, vma: Vma) -> None:
        i = self.vma_index(vma)
        del self.vmas[i]
        del self.starts[i]

    def reindex(self) -> None:
        self.vmas.sort(key=lambda v: v.start)
        self.starts = [v.start for v in self.vmas]

    def total_vm(self) -> int:
        return sum(v.end - v.start for v in self.vmas)


@dataclass(slots=True)
class MmStats:
    """A snapshot of an mm's counters (for reports)."""

    vm_pte_pages: int
    tables: dict[str, int] = field(default_factory=dict)
    rss_anon: int = 0
    rss_file: int = 0
