"""User folios: small (order-0) pages and PMD-sized (order-9) anonymous THP folios.

A THP is allocated as one compound order-9 block (``vma_alloc_anon_folio_pmd``:
``__GFP_COMP``, the head's :class:`~kpsim.mm.page.MemMap` entry holds PageHead and
the order) and is freed as one order-9 block once none of its 512 subpages is mapped
any more (``folios_put`` -> ``__free_pages_ok``). Map counts stay per subpage in
:attr:`MmContext.mapcount` (the PMD mapping counts on every subpage).

Departure: Linux puts a partly unmapped THP on the deferred split queue and the
shrinker may split it and free the unmapped subpages early; here the folio stays
whole and is freed when its last subpage goes (docs/fidelity.md).

``folio_pte_batches``: the batches ``folio_pte_batch`` forms over consecutive
present PTEs (``copy_present_ptes``, ``zap_present_ptes``): consecutive entries that
map consecutive pages of one large folio form one batch; a small folio is its own
batch; the zero page is no folio. PTE bit differences (which can end a batch in
Linux, e.g. a write-protected PTE among writable ones) are not compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kpsim.mm.mm_types import HPAGE_PMD_ORDER, ZERO, MmContext

_HPAGE_NR = 1 << HPAGE_PMD_ORDER
_HEAD_MASK = ~(_HPAGE_NR - 1)


def is_thp_folio(ctx: MmContext, head: int) -> bool:
    """Is ``head`` the head pfn of a live order-9 user folio?"""
    return bool(ctx.k.page_alloc.compound_order(head) == HPAGE_PMD_ORDER)


def large_heads(ctx: MmContext, pfns: Any) -> Any:
    """For each pfn, its THP folio's head, or -1 when it is not in a large folio."""
    heads = np.asarray(pfns, dtype=np.int64) & _HEAD_MASK
    out = np.full(heads.shape, -1, dtype=np.int64)
    if not heads.size or not ctx.k.page_alloc.memmap.pages:
        return out
    for h in np.unique(heads).tolist():
        if is_thp_folio(ctx, h):
            out[heads == h] = h
    return out


def folio_pte_batches(ctx: MmContext, idx: Any, pfns: Any) -> tuple[Any, Any]:
    """Folio batches over present PTEs at table positions ``idx`` (ascending) mapping
    ``pfns``: (position in ``idx`` where each batch starts, pages in the batch)."""
    n = len(pfns)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pfns = np.asarray(pfns, dtype=np.int64)
    folio = ctx.kind[pfns - ctx.base_pfn] != ZERO
    heads = large_heads(ctx, pfns)
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


def free_unmapped(ctx: MmContext, pfns: Any) -> None:
    """Free pages (ascending pfns) whose map count dropped to zero: small pages one
    by one (bulk), a THP folio as one order-9 block once all its subpages are unmapped."""
    pfns = np.asarray(pfns, dtype=np.int64)
    heads = large_heads(ctx, pfns)
    small = pfns[heads < 0]
    pa = ctx.k.page_alloc
    if small.size:
        pa.free_pages_bulk(small.tolist())
    for h in np.unique(heads[heads >= 0]).tolist():
        i = h - ctx.base_pfn
        if not ctx.mapcount[i : i + _HPAGE_NR].any():
            ctx.kind[i : i + _HPAGE_NR] = 0
            pa.free_pages(h, HPAGE_PMD_ORDER)
