"""The audit's x86 half: the invariants of :mod:`kpsim.audit.invariants`, read through the
x86 hardware model (4-level paging, the protection key in bits 62:59 of a leaf, IA32_PKRS).

- table-keyed / stray-key: every live page-table page is mapped in the direct map with
  ``KPKEYS_PKEY_PGTABLES``, whichever level maps it (a 1 GiB PDPTE or 2 MiB PDE with PS
  set, or a 4 KiB PTE); no other direct-map page carries a non-zero key.
- default-context: every CPU at rest holds the initial IA32_PKRS (``PKS_INIT_VALUE``),
  which must deny writes to the page-table key (WD or AD set); no lazy-MMU save is left.
- tlb: every TLB entry of the running PCID, and every global entry, agrees with a fresh
  walk from the CPU's CR3 (the page, its size, the rights combined over the levels, the
  key); a stale entry keeps the old key until INVLPG or INVPCID drops it.

The checks follow Rick Edgecombe's "PKS write protected page tables" debug checker
(``CONFIG_PKS_PG_TABLES_DEBUG``: each table page must be mapped with the page-table key
in the direct map) and Ira Weiny's PKS core (``pks_write_pkrs``, ``PKS_INIT_VALUE``).
The registry, metadata and THP-deposit checks are the arch-neutral ones of
:mod:`kpsim.audit.invariants`, fed by the walk here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from kpsim.arch.x86.memory import PAGE_OFFSET
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import PageFault
from kpsim.hw.x86.mmu import Leaf, Paging, walk
from kpsim.hw.x86.pkeys import access_disabled, write_disabled
from kpsim.mm.kpkeys_defs import KPKEYS_PKEY_PGTABLES

_U = np.uint64
_P, _PS = _U(e.P), _U(e.PS)
_ADDR = e.addr_mask(e.MAX_MAXPHYADDR)
#: ``KERNEL_PGD_BOUNDARY``: the first PGD entry of the kernel half
KERNEL_PGD_BOUNDARY = 256
#: VA shift of an entry at each Linux level (0 PGD .. 3 PTE)
_SHIFT = (39, 30, 21, 12)


def next_tables(t: Any, level: int) -> list[int]:
    """The tables a level-``level`` table (0 PGD .. 2 PMD) points at: present entries,
    PS clear below the PGD (PS in a PDPTE or PDE makes it a 1 GiB or 2 MiB leaf)."""
    present = (t & _P) != 0
    tables = present if level == 0 else present & ((t & _PS) == 0)
    return [v & _ADDR for v in t[tables].tolist()]


def table_tree(mem: Any, root_pa: int, *, user: bool = False) -> Iterator[tuple[int, int]]:
    """Every table page reachable from the PGD at ``root_pa``: (pfn, Linux level).
    ``user``: a user mm's PGD, whose upper half (``KERNEL_PGD_BOUNDARY`` up) holds
    ``pgd_ctor``'s copies of the kernel's entries: those tables are the kernel's."""
    from kpsim.audit.invariants import table_tree as walk_tree

    top = KERNEL_PGD_BOUNDARY if user else 512
    return walk_tree(mem, root_pa & _ADDR, next_tables=next_tables, top_entries=top)


def thp_block_count(mem: Any, pfn: int) -> int:
    """PMD entries of the table at ``pfn`` that map a 2 MiB page (PS set)."""
    t = mem.frame_ro(pfn)
    return int(np.count_nonzero(((t & _P) != 0) & ((t & _PS) != 0)))


def _paging(m: Any) -> Paging:
    return Paging(maxphyaddr=m.hw.cpus[0].maxphyaddr, pks=True)


def linear_pkey(m: Any, pfn: int) -> int | None:
    """The key of ``pfn``'s direct-map alias, or None when the direct map lacks it."""
    leaf = walk(m.mem, m.arch.swapper_pg_dir, PAGE_OFFSET + (pfn << 12), _paging(m))
    return None if isinstance(leaf, PageFault) else leaf.pkey


def keyed_pfns(m: Any) -> set[int]:
    """Pages whose direct-map alias carries a non-zero key: the leaves (1G, 2M, 4K)
    under the PGD entries that map the direct map, vectorised per table."""
    out: set[int] = set()
    lo, hi = m.mem.base >> 12, m.mem.end >> 12
    pgd = m.mem.frame_ro(m.arch.swapper_pg_dir >> 12)
    first = (PAGE_OFFSET >> 39) & 0x1FF
    last = ((PAGE_OFFSET + m.mem.end - 1) >> 39) & 0x1FF
    stack = [(int(v) & _ADDR, 1) for v in pgd[first : last + 1].tolist() if v & e.P]
    while stack:
        pa, level = stack.pop()
        t = m.mem.frame_ro(pa >> 12)
        present = (t & _P) != 0
        leaf = present if level == 3 else present & ((t & _PS) != 0)
        keyed = leaf & (((t >> _U(e.PKEY_SHIFT)) & _U(0xF)) != 0)
        n = 1 << (_SHIFT[level] - 12)
        for v in t[keyed].tolist():
            start = e.leaf_address(v, 4 - level) >> 12
            if start < hi and start + n > lo:
                out.update(range(max(start, lo), min(start + n, hi)))
        if level < 3:
            stack += [(v & _ADDR, level + 1) for v in t[present & ~leaf].tolist()]
    return out


def check_contexts(m: Any, violation: Any) -> list[Any]:
    """Every CPU at rest holds ``PKS_INIT_VALUE``, which denies writes to the table key;
    no lazy-MMU save is left over (``violation(invariant, detail)`` builds each)."""
    out = []
    init = m.arch.pkrs_init
    if m.arch.hardened_pgtables and not (
        write_disabled(init, KPKEYS_PKEY_PGTABLES) or access_disabled(init, KPKEYS_PKEY_PGTABLES)
    ):
        out.append(
            violation(
                "default-context",
                f"PKS_INIT_VALUE={init:#x} lets the default context write key "
                f"{KPKEYS_PKEY_PGTABLES} (the page-table key)",
            )
        )
    for cpu, pc in zip(m.hw.cpus, m.arch.percpu, strict=True):
        if not m.hw.pks or pc.irq_depth or pc.current.lazy_mmu_nesting:
            continue
        i = m.hw.cpus.index(cpu)
        if cpu.pkrs != init:
            out.append(
                violation(
                    "default-context",
                    f"cpu{i} IA32_PKRS={cpu.pkrs:#x} outside any section (expected {init:#x})",
                )
            )
        saved = pc.current.thread.pkrs_lazy_mmu
        if saved:
            out.append(
                violation(
                    "default-context",
                    f"cpu{i} task {pc.current.pid} keeps a lazy-MMU saved IA32_PKRS "
                    f"({saved:#x}) outside any section",
                )
            )
    return out


def _same(cached: Leaf, now: Leaf | PageFault) -> bool:
    if isinstance(now, PageFault):
        return False
    return (cached.page_pa, cached.level, cached.writable, cached.user, cached.nx) == (
        now.page_pa,
        now.level,
        now.writable,
        now.user,
        now.nx,
    ) and cached.pkey == now.pkey


def stale_vas(m: Any, cpu: Any) -> list[int]:
    """VAs of ``cpu``'s TLB entries (the running PCID's and the global ones) that a
    walk from its CR3 now contradicts."""
    pcid = cpu.pcid
    paging = cpu.paging()
    out = []
    cached = [(k[2] << k[1], leaf) for k, leaf in cpu.tlb.entries.items() if k[0] == pcid]
    cached += [(k[1] << k[0], leaf) for k, leaf in cpu.tlb.globals.items()]
    for va, leaf in cached:
        if not _same(leaf, walk(m.mem, cpu.cr3, va, paging)):
            out.append(va)
    return out


def keyed_pages(m: Any, pfns: Any) -> list[tuple[int, int]]:
    """(pfn, key) for the pages among ``pfns`` whose direct-map alias is keyed."""
    out = []
    paging = _paging(m)
    for p in pfns:
        leaf = walk(m.mem, m.arch.swapper_pg_dir, PAGE_OFFSET + (p << 12), paging)
        if not isinstance(leaf, PageFault) and leaf.pkey:
            out.append((p, leaf.pkey))
    return out
