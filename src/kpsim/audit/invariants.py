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

The audit reads memory and registers; it never writes. Address spaces are found from
the page-table registry (every registered level-0 table other than ``swapper_pg_dir``
is a user PGD), so the audit needs no list of processes. A PTE table deposited for a
PMD-mapped THP is registered but not reachable from the tree: the audit accepts, per
address space, exactly as many unreachable PTE tables as it finds THP block entries
(one deposit per huge PMD, as ``pgtable_trans_huge_deposit`` keeps), and checks that
they are keyed too.

Protected caches: an allocator that keeps freed table pages keyed (the PBA) makes them
legitimately carry pkey 1 while no tree uses them. It tells the audit which pages by
implementing :class:`ProtectedCache` (``kpkeys_cached_pfns()``) on the object behind
``m.kpkeys`` or behind the ``k.pgtable.kpkeys_alloc`` hook; those pages are exempt
from the stray-key check, and must themselves be keyed (a cached page at pkey 0 would
be handed out as an unprotected table).

The companion :mod:`kpsim.audit.freewatch` checks, while a workload runs, that no page
reaches the buddy allocator keyed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import (
    KERNEL_VA_START,
    PERMS_EL0,
    PERMS_EL1,
    walk,
    walk_to_pte_table,
)
from kpsim.hw.arm64.tlb import VPN_MASK
from kpsim.mm.page import PageFlags

Walked = dict[int, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"invariant": self.invariant, "detail": self.detail}


def arm64_next_tables(t: Any, level: int) -> list[int]:
    """The tables the level-``level`` table ``t`` points at (table descriptors)."""
    return [v & d.OA_MASK for v in t[(t & np.uint64(3)) == np.uint64(3)].tolist()]


def table_tree(
    mem: Any,
    root_pa: int,
    *,
    next_tables: Callable[[Any, int], list[int]] = arm64_next_tables,
    top_entries: int = 512,
) -> Iterator[tuple[int, int]]:
    """Every table page reachable from ``root_pa``: (pfn, level). ``next_tables`` reads
    an arch's table entries; ``top_entries``: how many entries of the root to follow."""
    stack = [(root_pa, 0)]
    while stack:
        pa, level = stack.pop()
        yield pa >> 12, level
        if level == 3:
            continue
        t = mem.frame_ro(pa >> 12)
        if level == 0:
            t = t[:top_entries]
        stack += [(child, level + 1) for child in next_tables(t, level)]


@runtime_checkable
class ProtectedCache(Protocol):
    """What a kpkeys table allocator with a cache of keyed free pages implements."""

    def kpkeys_cached_pfns(self) -> Iterable[int]: ...


def protected_cache_pfns(m: Any) -> set[int]:
    """Pages that a registered protected allocator holds keyed, outside every tree."""
    out: set[int] = set()
    hook = getattr(m.k.pgtable, "kpkeys_alloc", None)
    seen: list[object] = []
    for obj in (getattr(m, "kpkeys", None), getattr(hook, "__self__", None)):
        if obj is None or any(obj is s for s in seen):
            continue
        seen.append(obj)
        if isinstance(obj, ProtectedCache):
            out.update(int(p) for p in obj.kpkeys_cached_pfns())
    return out


def address_spaces(m: Any) -> list[tuple[str, int]]:
    """(owner, top-level table pa) for the kernel and every live mm (from the registry)."""
    swapper = m.arch.swapper_pg_dir
    roots = [("kernel", swapper)]
    for pfn, info in sorted(m.k.pgtable.live.items()):
        if info.level == 0 and (pfn << 12) != swapper:
            roots.append((info.owner, pfn << 12))
    return roots


def thp_blocks(m: Any, walked: Walked) -> dict[str, int]:
    """Per user address space, how many PMD entries map a block (a THP)."""
    out: dict[str, int] = {}
    x86 = _is_x86(m)
    for pfn, (owner, level) in walked.items():
        if level != 2 or owner == "kernel":
            continue
        t = m.mem.frame_ro(pfn)
        if x86:
            from kpsim.audit.x86 import thp_block_count

            n = thp_block_count(m.mem, pfn)
        else:
            n = int(np.count_nonzero((t & np.uint64(3)) == np.uint64(1)))
        if n:
            out[owner] = out.get(owner, 0) + n
    return out


def linear_pkey(m: Any, pfn: int) -> int | None:
    """The pkey of ``pfn``'s linear-map (direct-map) alias, or None if unmapped."""
    if _is_x86(m):
        from kpsim.audit import x86

        return x86.linear_pkey(m, pfn)
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


def walk_all(m: Any) -> Walked:
    """Every table page reachable from every address space: pfn -> (owner, level)."""
    walked: Walked = {}
    x86 = _is_x86(m)
    for owner, root in address_spaces(m):
        if x86:
            from kpsim.audit.x86 import table_tree as x86_tree

            tree = x86_tree(m.mem, root, user=owner != "kernel")
        else:
            tree = table_tree(m.mem, root)
        for pfn, level in tree:
            walked[pfn] = (owner, level)
    return walked


def deposited_tables(m: Any, walked: Walked) -> dict[int, str]:
    """Registered user PTE tables outside every tree (THP deposits): pfn -> owner."""
    return {
        pfn: info.owner
        for pfn, info in m.k.pgtable.live.items()
        if pfn not in walked and info.owner != "kernel" and info.level == 3
    }


def _is_x86(m: Any) -> bool:
    return getattr(m.arch, "name", "arm64") == "x86"


def audit(m: Any, *, cached: Iterable[int] = ()) -> list[Violation]:
    """Run every invariant; an empty list means the machine is clean. On the x86
    machine the walks, keys, register and TLB checks are :mod:`kpsim.audit.x86`'s."""
    out: list[Violation] = []
    walked = walk_all(m)
    deposits = deposited_tables(m, walked)
    swapper = m.arch.swapper_pg_dir >> 12
    if m.arch.hardened_pgtables:
        keyed = _keyed_pfns(m)
        cache = set(cached) | protected_cache_pfns(m)
        out += _check_tables_keyed(m, walked, deposits, cache, keyed, swapper)
        out += _check_no_stray_keys(m, walked, deposits, cache, keyed)
    out += _check_contexts(m)
    out += _check_metadata(m, walked, deposits)
    out += _check_tlbs(m)
    return out


def _keyed_pfns(m: Any) -> set[int]:
    if _is_x86(m):
        from kpsim.audit import x86

        return x86.keyed_pfns(m)
    return keyed_pfns(m)


def _check_tables_keyed(
    m: Any,
    walked: Walked,
    deposits: dict[int, str],
    cache: set[int],
    keyed: set[int],
    swapper: int,
) -> list[Violation]:
    out = []
    tables = [(pfn, owner, f"level-{level} table") for pfn, (owner, level) in walked.items()]
    tables += [(pfn, owner, "deposited PTE table") for pfn, owner in deposits.items()]
    tables += [(pfn, "allocator", "cached table page") for pfn in cache]
    for pfn, owner, what in sorted(tables):
        if pfn == swapper or pfn in keyed:
            continue
        out.append(
            Violation(
                "table-keyed",
                f"{owner} {what} pfn {pfn:#x} has pkey {linear_pkey(m, pfn)} in the linear map",
            )
        )
    return out


def _check_no_stray_keys(
    m: Any, walked: Walked, deposits: dict[int, str], cache: set[int], keyed: set[int]
) -> list[Violation]:
    out = []
    live = m.k.pgtable.live  # a registered table outside every tree is a registry problem
    for pfn in sorted(keyed):
        if pfn in walked or pfn in deposits or pfn in cache or pfn in live:
            continue
        state = "free" if m.k.page_alloc.is_free(pfn) else "in use, not a table"
        out.append(Violation("stray-key", f"pfn {pfn:#x} ({state}) carries a non-zero pkey"))
    return out


def _check_contexts(m: Any) -> list[Violation]:
    """Every CPU at rest is in the default context, and no lazy-MMU save is left over."""
    if _is_x86(m):
        from kpsim.audit import x86

        return x86.check_contexts(m, Violation)
    out = []
    for cpu, pc in zip(m.hw.cpus, m.arch.percpu, strict=True):
        if not cpu.poe or pc.irq_depth:
            continue
        task = pc.current
        if task.lazy_mmu_nesting:
            continue
        if cpu.por_el1 != m.arch.por_init:
            out.append(
                Violation(
                    "default-context",
                    f"cpu{cpu.cpu_id} POR_EL1={cpu.por_el1:#x} "
                    f"outside any section (expected {m.arch.por_init:#x})",
                )
            )
        saved = getattr(task.thread, "por_el1_lazy_mmu", 0)
        if saved:
            out.append(
                Violation(
                    "default-context",
                    f"cpu{cpu.cpu_id} task {task.pid} keeps a lazy-MMU saved POR_EL1 "
                    f"({saved:#x}) outside any section",
                )
            )
    return out


def _check_metadata(m: Any, walked: Walked, deposits: dict[int, str]) -> list[Violation]:
    out = []
    live = m.k.pgtable.live
    memmap = m.k.page_alloc.memmap
    for pfn, (owner, level) in walked.items():
        if pfn not in live:
            what = f"{owner} level-{level} table {pfn:#x} not registered"
            out.append(Violation("registry", what))
        elif live[pfn].level != level or live[pfn].owner != owner:
            info = live[pfn]
            out.append(
                Violation(
                    "registry",
                    f"table {pfn:#x} is a level-{level} table of {owner} but registered "
                    f"as level {info.level} of {info.owner}",
                )
            )
    for pfn in live:
        if not memmap.is_page_table(pfn):
            out.append(Violation("metadata", f"table {pfn:#x} lacks PageTable"))
    for pfn in memmap.pfns_with(PageFlags.TABLE):
        if pfn not in live:
            out.append(Violation("metadata", f"pfn {pfn:#x} has PageTable but is no table"))
    blocks = thp_blocks(m, walked)
    per_owner: dict[str, int] = {}
    for owner in deposits.values():
        per_owner[owner] = per_owner.get(owner, 0) + 1
    for owner in sorted(set(blocks) | set(per_owner)):
        if blocks.get(owner, 0) != per_owner.get(owner, 0):
            out.append(
                Violation(
                    "registry",
                    f"{owner}: {per_owner.get(owner, 0)} registered PTE tables outside the "
                    f"tree, but {blocks.get(owner, 0)} THP PMDs to deposit them for",
                )
            )
    for pfn, info in live.items():
        if pfn not in walked and pfn not in deposits:
            out.append(
                Violation(
                    "registry",
                    f"registered table {pfn:#x} ({info.owner}, level "
                    f"{info.level}) is not reachable",
                )
            )
    return out


def _check_tlbs(m: Any) -> list[Violation]:
    """Invariant 5: every TLB entry of the running address spaces agrees with a walk.

    Whole arrays per TLB part (the kernel/global entries, the running ASID's entries,
    each bulk-tier run; :class:`~kpsim.hw.arm64.tlb.Tlb`): the entries are grouped by
    2 MiB region, one walk of the first three levels
    (:func:`~kpsim.hw.arm64.mmu.walk_to_pte_table`) serves every entry of a region that
    reaches a level-3 table, and each entry is compared with its level-3 descriptor as
    the walker evaluates it (valid page with the Access flag, output address, the
    rights from :data:`~kpsim.hw.arm64.mmu.PERMS` under the table bits, the pkey); a
    region that reaches no level-3 table (blocks, faults) is walked entry by entry.
    Same violations, in the same order, as :func:`check_tlbs_reference` (tests/audit
    compare them on random corruptions of leaves and table entries)."""
    out = []
    if _is_x86(m):
        from kpsim.audit import x86

        for i, cpu in enumerate(m.hw.cpus):
            for va in x86.stale_vas(m, cpu):
                out.append(Violation("tlb", f"cpu{i} caches a stale entry for {va:#x}"))
        return out
    for cpu in m.hw.cpus:
        for va in _stale_vas(m.mem, cpu):
            out.append(Violation("tlb", f"cpu{cpu.cpu_id} caches a stale entry for {va:#x}"))
    return out


_U64 = np.uint64
_PAGE_OK = _U64(d.VALID | d.TYPE | d.AF)


def _leaf_fields(descs: Any, strip: int) -> tuple[Any, Any, Any, Any, Any]:
    """Level-3 descriptors evaluated as :func:`~kpsim.hw.arm64.mmu.walk_leaf` does:
    (valid page with AF, page pa, EL1 rights, EL0 rights, pkey), arrays."""
    ok = (descs & _PAGE_OK) == _PAGE_OK
    key = (((descs >> _U64(6)) & _U64(3)) | (((descs >> _U64(53)) & _U64(3)) << _U64(2))).astype(
        np.int64
    ) | (((strip >> 59) & 0xF) << 4)
    return (
        ok,
        descs & _U64(d.OA_MASK),
        PERMS_EL1[key],
        PERMS_EL0[key],
        (descs >> _U64(60)) & _U64(7),
    )


def _stale_vas(mem: Any, cpu: Any) -> list[int]:
    """The VAs, in :meth:`Tlb.cached` order, of ``cpu``'s stale entries."""
    tlb = cpu.tlb
    bad: list[int] = []
    parts = [tlb.entries]
    mine = tlb.asids.get(cpu.asid + 1)  # other address spaces: checked when they run
    if mine:
        parts.append(mine)
    for part in parts:
        if part:
            bad += _stale_in_dict(mem, cpu, part)
    for tag, runs in tlb.bulk.items():
        if tag and tag != cpu.asid + 1:
            continue
        for region, run in runs.items():
            bad += _stale_in_run(mem, cpu, region, run)
    return bad


def _root(cpu: Any, va: int) -> Any:
    return cpu.ttbr1 if va >= KERNEL_VA_START else cpu.ttbr0


def _stale_in_dict(mem: Any, cpu: Any, part: dict[int, Any]) -> list[int]:
    """Stale entries of one TLB dict (key -> entry tuple), in the dict's order."""
    vpn = np.array([k & VPN_MASK for k in part], dtype=np.uint64)
    entries = list(part.values())
    pa, el1, el0, po = (np.array(f, dtype=np.uint64) for f in list(zip(*entries, strict=True))[:4])
    region = vpn >> _U64(9)
    order = np.argsort(region, kind="stable")
    sorted_region = region[order]
    starts = np.flatnonzero(np.r_[True, sorted_region[1:] != sorted_region[:-1]])
    ends = np.r_[starts[1:], order.size]
    stale = np.zeros(vpn.size, dtype=bool)
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        idx = order[lo:hi]
        va0 = int(vpn[idx[0]]) << 12
        root = _root(cpu, va0)
        if root is None:
            continue
        reach = walk_to_pte_table(mem, root, va0)
        if reach is None:
            for i in idx.tolist():
                stale[i] = _stale(mem, root, int(vpn[i]) << 12, entries[i])
            continue
        table_pa, strip = reach
        descs = mem.frame_ro(table_pa >> 12)[(vpn[idx] & _U64(511)).astype(np.int64)]
        ok, w_pa, w_el1, w_el0, w_po = _leaf_fields(descs, strip)
        stale[idx] = (
            ~ok
            | (w_pa != pa[idx])
            | (w_el1 != el1[idx].astype(np.int64))
            | (w_el0 != el0[idx].astype(np.int64))
            | (w_po != po[idx])
        )
    return [int(v) << 12 for v in vpn[stale].tolist()]


def _stale_in_run(mem: Any, cpu: Any, region: int, run: Any) -> list[int]:
    """Stale entries of one bulk-tier run (ascending pages, as :meth:`Tlb.items`)."""
    nz = np.flatnonzero(run.descs)
    if not nz.size:
        return []
    va0 = region << 21
    root = _root(cpu, va0)
    if root is None:
        return []
    cached = run.descs[nz]
    reach = walk_to_pte_table(mem, root, va0)
    if reach is None:
        out = []
        for i, desc in zip(nz.tolist(), cached.tolist(), strict=True):
            e = (desc & d.OA_MASK, run.el1, run.el0, (desc >> 60) & 7)
            if _stale(mem, root, va0 | (i << 12), e):
                out.append(va0 | (i << 12))
        return out
    table_pa, strip = reach
    ok, w_pa, w_el1, w_el0, w_po = _leaf_fields(mem.frame_ro(table_pa >> 12)[nz], strip)
    stale = (
        ~ok
        | (w_pa != (cached & _U64(d.OA_MASK)))
        | (w_el1 != run.el1)
        | (w_el0 != run.el0)
        | (w_po != ((cached >> _U64(60)) & _U64(7)))
    )
    return [va0 | (i << 12) for i in nz[stale].tolist()]


def _stale(mem: Any, root: int, va: int, e: Any) -> bool:
    """Does a reference walk of ``va`` from ``root`` disagree with the entry ``e``?"""
    t = walk(mem, root, va)
    return isinstance(t, Fault) or (t.page_pa, t.perm_el1, t.perm_el0, t.po_index) != e[:4]


def check_tlbs_reference(m: Any) -> list[Violation]:
    """Invariant 5 one entry at a time: a full reference walk for every TLB entry (what
    :func:`_check_tlbs` must equal)."""
    out = []
    for cpu in m.hw.cpus:
        for va, asid, e in cpu.tlb.cached():
            if asid is not None and asid != cpu.asid:
                continue  # another address space's entry: checked when it runs
            root = cpu.ttbr1 if va >= KERNEL_VA_START else cpu.ttbr0
            if root is None:
                continue
            if _stale(m.mem, root, va, e):
                out.append(Violation("tlb", f"cpu{cpu.cpu_id} caches a stale entry for {va:#x}"))
    return out


def check_interrupts(m: Any, records: Iterable[Any]) -> list[Violation]:
    """Each injected interrupt (an object with ``cpu``, ``por_before``,
    ``por_in_handler``, ``por_after_return`` and ``por_at_section_end``, as the mixed
    workload records them) ran its handler in the default context, gave the
    interrupted code its own value back, and the section ended in the default context.
    """
    out: list[Violation] = []
    if not m.arch.system_supports_poe():
        return out
    init = m.arch.pkey_reg_init()
    reg = m.arch.PKEY_REG
    for i, r in enumerate(records):
        where = f"interrupt {i} on cpu{r.cpu}"
        if r.por_in_handler != init:
            out.append(
                Violation(
                    "irq-context",
                    f"{where}: handler ran with {reg}={r.por_in_handler:#x} "
                    f"(expected the default {init:#x})",
                )
            )
        if r.por_after_return != r.por_before:
            out.append(
                Violation(
                    "irq-context",
                    f"{where}: {reg}={r.por_after_return:#x} after return, "
                    f"{r.por_before:#x} before the interrupt",
                )
            )
        if r.por_at_section_end != init:
            out.append(
                Violation(
                    "irq-context",
                    f"{where}: the interrupted section ended with "
                    f"{reg}={r.por_at_section_end:#x} (expected {init:#x})",
                )
            )
    return out
