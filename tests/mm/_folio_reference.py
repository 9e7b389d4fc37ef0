"""The loop-based folio batching and gather accounting that the vectorised versions
in kpsim.mm.folio / kpsim.mm.mmu_gather replaced (kept verbatim as the reference the
equivalence tests compare against)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.mm.folio import is_thp_folio
from kpsim.mm.mm_types import HPAGE_PMD_ORDER, PAGE_SIZE, ZERO, MmContext
from kpsim.mm.mmu_gather import MmuGather

_HPAGE_NR = 1 << HPAGE_PMD_ORDER
_HEAD_MASK = ~(_HPAGE_NR - 1)


def ref_large_heads(ctx: MmContext, pfns: Any) -> Any:
    heads = np.asarray(pfns, dtype=np.int64) & _HEAD_MASK
    out = np.full(heads.shape, -1, dtype=np.int64)
    if not heads.size or not ctx.k.page_alloc.memmap.pages:
        return out
    for h in np.unique(heads).tolist():
        if is_thp_folio(ctx, h):
            out[heads == h] = h
    return out


def ref_folio_pte_batches(ctx: MmContext, idx: Any, pfns: Any) -> tuple[Any, Any]:
    n = len(pfns)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pfns = np.asarray(pfns, dtype=np.int64)
    folio = ctx.kind[pfns - ctx.base_pfn] != ZERO
    heads = ref_large_heads(ctx, pfns)
    brk = np.ones(n, dtype=bool)
    if n > 1:
        lg = heads >= 0
        same = (
            lg[1:]
            & (heads[1:] == heads[:-1])
            & (pfns[1:] == pfns[:-1] + 1)
            & (np.asarray(idx[1:]) == np.asarray(idx[:-1]) + 1)
        )
        brk[1:] = ~same
    bounds = np.flatnonzero(brk)
    sizes = np.diff(np.append(bounds, n))
    keep = folio[bounds]
    return bounds[keep], sizes[keep]


def ref_remove_ptes(tlb: MmuGather, addrs: Any, starts: Any, sizes: Any) -> None:
    """The per-batch loop of ``MmuGather.remove_ptes`` before vectorisation."""
    n = len(addrs)
    if n == 0:
        return
    first = 0
    b, nb = 0, len(starts)
    while b < nb:
        slots = 1 if int(sizes[b]) == 1 else 2
        run = b + 1
        while run < nb and (1 if int(sizes[run]) == 1 else 2) == slots:
            run += 1
        taken, full = tlb._add(run - b, slots)
        b += taken
        if full:
            last = int(starts[b - 1]) + int(sizes[b - 1]) - 1
            tlb.flush_pte_range(int(addrs[first]), int(addrs[last]) - int(addrs[first]) + PAGE_SIZE)
            tlb.flush_mmu()
            first = last + 1
    if first < n:
        tlb.flush_pte_range(int(addrs[first]), int(addrs[-1]) - int(addrs[first]) + PAGE_SIZE)


def ref_free_unmapped(ctx: MmContext, pfns: Any) -> None:
    pfns = np.asarray(pfns, dtype=np.int64)
    heads = ref_large_heads(ctx, pfns)
    small = pfns[heads < 0]
    pa = ctx.k.page_alloc
    if small.size:
        pa.free_pages_bulk(small.tolist())
    for h in np.unique(heads[heads >= 0]).tolist():
        i = h - ctx.base_pfn
        if not ctx.mapcount[i : i + _HPAGE_NR].any():
            ctx.kind[i : i + _HPAGE_NR] = 0
            pa.free_pages(h, HPAGE_PMD_ORDER)
