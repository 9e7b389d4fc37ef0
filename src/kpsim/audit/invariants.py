"""The kpkeys_hardened_pgtables audit: invariants checked through the simulated hardware.

With the feature on (spec §4.1):

1. every live page-table page, at every level, of the kernel and of every address
   space, except ``swapper_pg_dir``, is mapped in the linear map with pkey 1;
2. no page that is not a live table (or a page cached by a protected allocator)
   carries pkey 1 in the linear map;
3. no CPU sits outside the default context while no guard or lazy section is open
   on it;
4. the ``struct page`` metadata and the allocator's registry agree with the tables
   found by walking every tree;
5. no TLB entry disagrees with the tables.

The audit reads memory and registers; it never writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import KERNEL_VA_START, walk

Walked = dict[int, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"invariant": self.invariant, "detail": self.detail}


def table_tree(mem: Any, root_pa: int) -> Iterator[tuple[int, int]]:
    """Every table page reachable from ``root_pa``: (pfn, level)."""
    stack = [(root_pa, 0)]
    while stack:
        pa, level = stack.pop()
        yield pa >> 12, level
        if level == 3:
            continue
        t = mem.frame_ro(pa >> 12)
        tables = t[(t & np.uint64(3)) == np.uint64(3)]
        for v in tables.tolist():
            stack.append((v & d.OA_MASK, level + 1))


def address_spaces(m: Any) -> list[tuple[str, int]]:
    """(owner, top-level table pa) for the kernel and every live mm."""
    roots = [("kernel", m.arch.swapper_pg_dir)]
    for mm in getattr(m.k, "mm_list", lambda: [])():
        roots.append((f"mm:{mm.id}", mm.pgd_pa))
    return roots


def linear_pkey(m: Any, pfn: int) -> int | None:
    t = walk(m.mem, m.arch.swapper_pg_dir, m.arch.layout.pfn_to_virt(pfn))
    return None if isinstance(t, Fault) else t.po_index


def keyed_pfns(m: Any) -> set[int]:
    """Pages whose linear-map alias carries a non-zero pkey (vectorised per table)."""
    out: set[int] = set()
    lo, hi = m.mem.base >> 12, m.mem.end >> 12
    for pfn, level in table_tree(m.mem, m.arch.swapper_pg_dir):
        if level == 0:
            continue
        t = m.mem.frame_ro(pfn)
        valid = (t & np.uint64(1)) == np.uint64(1)
        leaf = valid & (((t & np.uint64(2)) == 0) if level < 3 else valid)
        keyed = leaf & ((t >> np.uint64(60)) & np.uint64(7) != 0)
        for v in t[keyed].tolist():
            oa = v & d.BLOCK_OA_MASK[level]
            first = oa >> 12
            n = 1 << (d.LEVEL_SHIFT[level] - 12)
            if lo <= first < hi:
                out.update(range(first, min(first + n, hi)))
    return out


def audit(m: Any, *, cached: Iterable[int] = ()) -> list[Violation]:
    """Run every invariant; an empty list means the machine is clean."""
    out: list[Violation] = []
    walked: Walked = {}
    for owner, root in address_spaces(m):
        for pfn, level in table_tree(m.mem, root):
            walked[pfn] = (owner, level)
    swapper = m.arch.swapper_pg_dir >> 12
    if m.arch.hardened_pgtables:
        out += _check_tables_keyed(m, walked, swapper)
        out += _check_no_stray_keys(m, walked, set(cached))
    out += _check_contexts(m)
    out += _check_metadata(m, walked)
    out += _check_tlbs(m)
    return out


def _check_tables_keyed(m: Any, walked: Walked, swapper: int) -> list[Violation]:
    keyed = keyed_pfns(m)
    out = []
    for pfn, (owner, level) in sorted(walked.items()):
        if pfn == swapper or pfn in keyed:
            continue
        out.append(
            Violation(
                "table-keyed",
                f"{owner} level-{level} table pfn {pfn:#x} has pkey "
                f"{linear_pkey(m, pfn)} in the linear map",
            )
        )
    return out


def _check_no_stray_keys(m: Any, walked: Walked, cached: set[int]) -> list[Violation]:
    out = []
    for pfn in sorted(keyed_pfns(m)):
        if pfn in walked or pfn in cached:
            continue
        state = "free" if m.k.page_alloc.is_free(pfn) else "in use, not a table"
        out.append(Violation("stray-key", f"pfn {pfn:#x} ({state}) carries a non-zero pkey"))
    return out


def _check_contexts(m: Any) -> list[Violation]:
    out = []
    for cpu, pc in zip(m.hw.cpus, m.arch.percpu, strict=True):
        if not cpu.poe or pc.irq_depth or pc.current.lazy_mmu_nesting:
            continue
        if cpu.por_el1 != m.arch.por_init:
            out.append(
                Violation(
                    "default-context",
                    f"cpu{cpu.cpu_id} POR_EL1={cpu.por_el1:#x} "
                    f"outside any section (expected {m.arch.por_init:#x})",
                )
            )
    return out


def _check_metadata(m: Any, walked: Walked) -> list[Violation]:
    out = []
    live = m.k.pgtable.live
    for pfn, (owner, level) in walked.items():
        if pfn not in live:
            what = f"{owner} level-{level} table {pfn:#x} not registered"
            out.append(Violation("registry", what))
        elif not m.k.page_alloc.memmap.is_page_table(pfn):
            out.append(Violation("metadata", f"table {pfn:#x} lacks PageTable"))
    for pfn, info in live.items():
        if pfn not in walked and getattr(info, "source", "") != "deposit":
            out.append(
                Violation(
                    "registry",
                    f"registered table {pfn:#x} ({info.owner}, level "
                    f"{info.level}) is not reachable",
                )
            )
    return out


def _check_tlbs(m: Any) -> list[Violation]:
    out = []
    for cpu in m.hw.cpus:
        for va, asid, e in cpu.tlb.cached():
            if asid is not None and asid != cpu.asid:
                continue  # another address space's entry: checked when it runs
            root = cpu.ttbr1 if va >= KERNEL_VA_START else cpu.ttbr0
            if root is None:
                continue
            t = walk(m.mem, root, va)
            if isinstance(t, Fault) or (t.page_pa, t.perm_el1, t.perm_el0, t.po_index) != e[:4]:
                out.append(Violation("tlb", f"cpu{cpu.cpu_id} caches a stale entry for {va:#x}"))
    return out
