"""User accesses over a range, with runs of anonymous faults resolved a table at a time.

:func:`touch_range` is the loop of ``Process.touch_range``: one EL0 access per address;
on a fault, ``handle_mm_fault`` (``mm/memory.c``) and a retry, as the exception return
would. For speed, the addresses inside one PTE table are looked at together first
(:func:`touch_slot`): as long as each page either translates and permits the access
(a TLB hit or a walk) or is not present (``pte_none``) in an anonymous VMA, the whole
run is done in one step: the not-present pages get ``do_anonymous_page`` together
(one bulk allocation like ``alloc_pages_bulk``, ``clear_page`` of each through the
MMU-checked linear map, one guarded ``set_pte`` each through ``pt_store_each``, the
zero page for reads) and every access of the run is made. Counters (page faults, CPU
faults, TLB hits/misses/walks, loads/stores, POR_EL1 writes and ISBs, guard entries,
PTE writes, allocations, ``clear_page``), TLB contents, allocator lists, map counts,
RSS and page contents end up as the one-by-one loop leaves them; the first page that
is anything else (no table yet, a THP, a file or PROT_NONE page, a permission fault,
a page the allocator or the linear map cannot give) ends the run there and the loop
goes on one address at a time. The batch never runs with interrupts being injected
between page-table writes (``irq_hook``). ``BATCH = False`` turns it off (tests compare
both). Not modelled as such in Linux: see docs/fidelity.md, "Vectorised user faults".
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any, Final, Protocol, cast

import numpy as np

from kpsim.hw.hostgc import gc_paused
from kpsim.mm import memory as m
from kpsim.mm.arch_ops import ArchOps
from kpsim.mm.gfp import GFP_HIGHUSER_MOVABLE, Gfp
from kpsim.mm.mm_types import ANON, MmStruct, VmFlags

#: Resolve runs of faults a PTE table at a time (False: strictly one address at a time).
BATCH = True
#: Fewer addresses than this in a table are done one at a time.
MIN_BATCH: Final = 8

Access = Callable[[int, bool, int], None]
_GFP: Final = GFP_HIGHUSER_MOVABLE | Gfp.ZERO
_MISSING: Final = None


class BatchArch(ArchOps, Protocol):
    """The arch hooks a batch needs (arm64: ``PgtableUserMixin``)."""

    def user_batch_ok(self) -> bool: ...

    def user_pte_table(self, va: int) -> tuple[int, int] | None: ...

    def user_probe(self, vas: list[int]) -> list[Any] | None: ...

    def user_leaf_entries(self, descs: Any, strip: int) -> list[Any]: ...

    def user_allows(self, entry: Any, write: bool) -> bool: ...

    def user_commit_fresh(
        self, vas: list[int], descs: Any, leaf: Any, strip: int, write: bool, value: int
    ) -> None: ...

    def user_commit(
        self,
        vas: list[int],
        entries: list[Any],
        faulted: int,
        extra: list[list[int]] | None,
        write: bool,
        value: int,
    ) -> None: ...

    def clear_pages_probe(self, pfns: list[int]) -> tuple[int, Any]: ...

    def clear_pages_commit(self, pfns: list[int], probed: Any) -> None: ...

    def clear_pages_unprobe(self, kept: list[int]) -> None: ...

    def pt_store_each(self, table_pa: int, index: Any, values: Any) -> int: ...


def touch_range(
    mm: MmStruct, addr: int, length: int, stride: int, write: bool, value: int, access: Access
) -> None:
    """``access(a, write, value)`` for every ``a`` in ``range(addr, addr + length, stride)``,
    with runs inside one PTE table done by :func:`touch_slot` when that is exact."""
    with gc_paused():
        _touch_range(mm, addr, length, stride, write, value, access)


def _touch_range(
    mm: MmStruct, addr: int, length: int, stride: int, write: bool, value: int, access: Access
) -> None:
    addrs = range(addr, addr + length, stride)
    arch = mm.ctx.arch
    batch = BATCH and stride > 0 and hasattr(arch, "user_batch_ok")
    i, n = 0, len(addrs)
    retry_slot = -1
    while i < n:
        a = addrs[i]
        slot = a >> 21
        j = min(n, i + -(-(((slot + 1) << 21) - a) // stride))
        done = 0
        if batch and j - i >= MIN_BATCH and slot != retry_slot:
            done, again = touch_slot(mm, cast(BatchArch, arch), addrs[i:j], write, value)
            if not done and not again:
                retry_slot = slot  # nothing to gain here: the rest of the slot one by one
        if done:
            i += done
        else:
            access(a, write, value)
            i += 1


def touch_slot(
    mm: MmStruct, arch: BatchArch, addrs: range, write: bool, value: int
) -> tuple[int, bool]:
    """Do a leading run of ``addrs`` (all in one 2 MiB slot) at once.

    Returns (addresses done, whether a retry after one single access may work).
    """
    if not arch.user_batch_ok():
        return 0, False
    first = addrs[0]
    vma = mm.find_vma(first)
    need = int(VmFlags.WRITE) if write else int(VmFlags.READ | VmFlags.WRITE)
    if vma is None or vma.start > first or vma.end <= addrs[-1] or vma.file is not None:
        return 0, False
    if not int(vma.flags) & need or (first >> 21) in mm.thp:
        return 0, False
    tpfn = mm.tables[3].get(first >> 21)
    if tpfn is None:
        return 0, True  # the first fault makes the tables; then try again
    path = arch.user_pte_table(first)
    if path is None or path[0] != tpfn << 12:
        return 0, False
    tpa, strip = path
    vas, extra = _pages(addrs)
    run = _classify(arch, tpa, strip, vas, write)
    if not run:
        return 0, False
    entries, missing = run
    prot = vma.page_prot(arch)
    template = arch.pte_mkwrite(arch.pte_mkdirty(prot)) if write else prot
    if missing:
        leaf = arch.user_leaf_entries(np.array([template], dtype=np.uint64), strip)[0]
        if leaf is None or not arch.user_allows(leaf, write):
            del entries[missing[0] :], missing[:]  # the retry would fault again: one by one
    fresh = None
    if missing:
        fresh = _fault_in(mm, arch, vma, tpa, strip, vas, entries, missing, template, write)
    npages = len(entries)
    if not npages:
        return 0, False
    if fresh is not None and extra is None:  # every page faulted in: one leaf shape
        arch.user_commit_fresh(vas[:npages], fresh, leaf, strip, write, value)
        return npages, False
    if fresh is not None:
        entries[:] = arch.user_leaf_entries(fresh, strip)
    extra = None if extra is None else extra[:npages]
    arch.user_commit(vas[:npages], entries, len(missing), extra, write, value)
    return (npages if extra is None else sum(len(e) for e in extra)), False


def _pages(addrs: range) -> tuple[list[int], list[list[int]] | None]:
    """The first address in each page, and all addresses per page when several."""
    if addrs.step >= 4096:
        return list(addrs), None
    vas: list[int] = []
    extra: list[list[int]] = []
    for a in addrs:
        if vas and a >> 12 == vas[-1] >> 12:
            extra[-1].append(a)
        else:
            vas.append(a)
            extra.append([a])
    return vas, extra


def _classify(
    arch: BatchArch, tpa: int, strip: int, vas: list[int], write: bool
) -> tuple[list[Any], list[int]] | None:
    """The leading run of pages that succeed (TLB hit or walk) or are not present:
    (entry per page, None for a not-present one; indices of the not-present pages)."""
    hits = arch.user_probe(vas)  # None: every page misses in the TLB
    table = arch.read_table(tpa)
    descs = table[(np.asarray(vas, dtype=np.int64) >> 12) & 0x1FF]
    if hits is None:
        if not descs.any():  # the common case: none there yet
            return [_MISSING] * len(vas), list(range(len(vas)))
        hits = [None] * len(vas)
    walked = arch.user_leaf_entries(descs, strip)
    raw = descs.tolist()
    entries: list[Any] = []
    missing: list[int] = []
    allows = arch.user_allows
    for i, (hit, leaf, v) in enumerate(zip(hits, walked, raw, strict=True)):
        if hit is not None:
            if not allows(hit, write):
                break
            entries.append(hit)
        elif leaf is not None:
            if not allows(leaf, write):
                break
            entries.append(leaf)
        elif v == 0:
            entries.append(_MISSING)
            missing.append(i)
        else:
            break
    return (entries, missing) if entries else None


def _fault_in(
    mm: MmStruct,
    arch: BatchArch,
    vma: Any,
    tpa: int,
    strip: int,
    vas: list[int],
    entries: list[Any],
    missing: list[int],
    template: int,
    write: bool,
) -> Any:
    """``do_anonymous_page`` for every not-present page of the run (trimmed to what the
    allocator and the linear map can give without the slow path or a fault). When
    every page of the run was not present, their new PTEs (an array) are returned and
    ``entries`` is left for the caller to fill; else None and ``entries`` is filled."""
    ctx = mm.ctx
    pa = ctx.k.page_alloc
    if write:
        plan = pa.plan_bulk(len(missing))
        planned = list(chain.from_iterable(range(pfn, pfn + take) for _, pfn, take in plan))
        ok, probed = arch.clear_pages_probe(planned)
        fail = pa.fail_page_alloc  # the loop's draws, page by page, in its order
        if fail is not None:
            drawn = fail.alloc_page_run(int(_GFP), 0, min(ok, len(missing)))
            if drawn < ok:
                arch.clear_pages_unprobe(planned[:drawn])
                ok = drawn
        if ok < len(missing):
            del entries[missing[ok] :], missing[ok:]
            if not missing:
                return None
            plan = pa.plan_bulk(len(missing))
        m.anon_vma_prepare(ctx, vma, mm)
        pfns = pa.alloc_pages_bulk(
            _GFP, plan, clear_pages=lambda got: arch.clear_pages_commit(got, probed)
        )
        arr = np.asarray(pfns, dtype=np.int64)
        idx = arr - ctx.base_pfn
        ctx.kind[idx] = ANON
        ctx.mapcount[idx] += 1  # fresh pages: each once
        mm.rss_anon += len(pfns)
    else:
        arr = np.full(len(missing), ctx.zero_pfn, dtype=np.int64)
    ctx.k.counters["pgfault"] += len(missing)
    values = arch.ptes_from_pfns(arr, template)
    index = (np.asarray(vas, dtype=np.int64)[missing] >> 12) & 0x1FF
    arch.pt_store_each(tpa, index, values)
    if len(missing) == len(entries):  # every page was missing: missing == 0, 1, 2...
        return values  # the caller makes the leaves (or commits them at once)
    for i, leaf in zip(missing, arch.user_leaf_entries(values, strip), strict=True):
        entries[i] = leaf
    return None
