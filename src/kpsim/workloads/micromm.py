"""micromm fork and munmap: David Hildenbrand's mm micro-benchmarks (kpkeys-spec.md §7.1).

Each run maps ``size`` bytes of private anonymous memory in a fresh process and
populates it, then times one operation:

- ``micromm.fork``: ``fork()`` (``kernel_clone`` -> ``dup_mm`` -> ``dup_mmap`` ->
  ``copy_page_range`` -> ``copy_pte_range``/``copy_present_ptes``: the child's tables
  are allocated, every present PTE is write-protected in the parent and copied to the
  child, in one lazy-MMU section per PTE table). The child then exits, outside the
  measured window.
- ``micromm.munmap``: ``munmap()`` of the whole range (``do_vmi_munmap`` ->
  ``unmap_region`` -> ``unmap_vmas``/``zap_pte_range`` and ``free_pgtables``: every
  PTE cleared a PTE table per lazy-MMU section, the pages and tables freed).

``h=0`` populates with small (order-0) folios (``MAP_POPULATE``). ``h=1`` populates
with PMD-sized (order-9) THPs that are then PTE-mapped, as mm selftests' cow.c
"PTE-mapped THP" does: ``MADV_HUGEPAGE``, one write fault per 2 MiB, then
``mprotect(PROT_READ)`` of one page of each THP and back, which splits the PMD
(``__split_huge_pmd``) but not the folio.

The mm model counts ``fork_pte_copy``/``zap_pte`` per present PTE copied or zapped
and ``fork_folio``/``zap_folio`` per folio batch (``folio_pte_batch``: one per small
folio, one per PTE-mapped THP per PTE table), which is where h=1 is cheaper in Linux;
a THP is one order-9 folio, allocated and freed as one order-9 block.

``repeat`` times the operation that many times (a fresh populated range each time for
munmap; the same parent for fork).
"""

from __future__ import annotations

import random
from typing import Any

from kpsim.machine.boot import Machine
from kpsim.mm import mmap as mmap_mod
from kpsim.mm.madvise import MADV_HUGEPAGE
from kpsim.mm.process import Process
from kpsim.units import SZ_2M
from kpsim.workloads.base import ParamSpec, WorkloadDef, measured

PAGE = 4096

PARAMS = (
    ParamSpec("size", "size", "1G", min=SZ_2M, max=1 << 36,
              doc="bytes mapped and populated (rounded down to a multiple of 2M)"),
    ParamSpec("h", "choice", 0, choices=(0, 1),
              doc="0: small folios; 1: PMD-sized folios, PTE-mapped"),
    ParamSpec("repeat", "int", 1, min=1, max=1000, doc="timed operations"),
)  # fmt: skip


def _populate(p: Process, size: int, h: int) -> int:
    """Map and populate ``size`` bytes; return the address."""
    if h == 0:
        flags = mmap_mod.MAP_PRIVATE | mmap_mod.MAP_ANONYMOUS | mmap_mod.MAP_POPULATE
        return p.mmap(None, size, mmap_mod.PROT_READ | mmap_mod.PROT_WRITE, flags)
    addr = p.mmap(None, size)
    p.madvise(addr, size, MADV_HUGEPAGE)
    p.touch_range(addr, size, stride=SZ_2M, write=True)
    for a in range(addr, addr + size, SZ_2M):  # cow.c: PTE-map each THP
        p.mprotect(a + PAGE, PAGE, mmap_mod.PROT_READ)
        p.mprotect(a + PAGE, PAGE, mmap_mod.PROT_READ | mmap_mod.PROT_WRITE)
    p.touch_range(addr, size, write=True)  # any slot without a THP falls back to pages
    return addr


def _size(params: dict[str, Any]) -> int:
    size = int(params["size"])
    return size - size % SZ_2M if size >= SZ_2M else SZ_2M


def run_fork(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    """Populate, then ``fork()`` ``repeat`` times; each child exits untimed."""
    size, h = _size(params), int(params["h"])
    p = Process.create(m, "micromm-fork")
    addr = _populate(p, size, h)
    for _ in range(int(params["repeat"])):
        with measured(m):
            child = p.fork()
        child.exit()
    p.munmap(addr, size)
    p.exit()


def run_munmap(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    """``repeat`` times: populate, then ``munmap()`` the whole range."""
    size, h = _size(params), int(params["h"])
    p = Process.create(m, "micromm-munmap")
    for _ in range(int(params["repeat"])):
        addr = _populate(p, size, h)
        with measured(m):
            p.munmap(addr, size)
    p.exit()


DEFS = (
    WorkloadDef("micromm.fork", "map and populate `size`, then time fork() (the child exits)",
                PARAMS, run_fork),
    WorkloadDef("micromm.munmap", "map and populate `size`, then time munmap() of it",
                PARAMS, run_munmap),
)  # fmt: skip
