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

from typing import Any, Final

import numpy as np

from kpsim.mm.mm_types import HPAGE_PMD_ORDER, ZERO, MmContext

_HPAGE_NR: Final = 1 << HPAGE_PMD_ORDER
#: candidate-head windows up to this many 2 MiB frames are deduplicated by bincount
_WINDOW: Final = 4096
#: windows up to this many frames are looked up frame by frame
_SMALL: Final = 8


def unique_sorted(a: Any) -> Any:
    """``np.unique`` of a 1-D integer array (ascending, distinct) by sort and compare:
    the same result, several times faster than numpy's hash-based unique on the few
    hundred values of a page table."""
    s = np.sort(np.asarray(a))
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def is_thp_folio(ctx: MmContext, head: int) -> bool:
    """Is ``head`` the head pfn of a live order-9 user folio?"""
    return bool(ctx.k.page_alloc.compound_order(head) == HPAGE_PMD_ORDER)


def _thp_frames(ctx: MmContext, frames: Any) -> list[int]:
    """The 2 MiB frames (pfn >> 9) among ``frames`` whose head is a live THP.

    Candidates, cheapest first: every frame of a small window (a PTE table's
    pages usually lie in one or two frames), else a ``np.bincount`` dedup, else
    a sort-based dedup; each candidate is looked up once in the memory map."""
    if not frames.size or not ctx.k.page_alloc.memmap.pages:
        return []
    lo, hi = int(frames.min()), int(frames.max())
    cands: Any
    if hi - lo < _SMALL:
        cands = range(lo, hi + 1)
    elif hi - lo < _WINDOW:
        cands = (np.flatnonzero(np.bincount(frames - lo)) + lo).tolist()
    else:
        cands = unique_sorted(frames).tolist()
    order = ctx.k.page_alloc.compound_order
    return [f for f in cands if order(f << HPAGE_PMD_ORDER) == HPAGE_PMD_ORDER]


def _heads_of(frames: Any, thp: list[int]) -> Any:
    out = np.full(frames.shape, -1, dtype=np.int64)
    for f in thp:
        out[frames == f] = f << HPAGE_PMD_ORDER
    return out


def large_heads(ctx: MmContext, pfns: Any) -> Any:
    """For each pfn, its THP folio's head, or -1 when it is not in a large folio."""
    frames = np.asarray(pfns, dtype=np.int64) >> HPAGE_PMD_ORDER
    return _heads_of(frames, _thp_frames(ctx, frames))


def folio_pte_batches(ctx: MmContext, idx: Any, pfns: Any) -> tuple[Any, Any]:
    """Folio batches over present PTEs at table positions ``idx`` (ascending) mapping
    ``pfns``: (position in ``idx`` where each batch starts, pages in the batch).

    Whole-array: a batch boundary is wherever the head, the pfn step or the table
    position step breaks (``np.flatnonzero`` of the break mask, sizes by ``np.diff``);
    with no large folio among the pfns every non-zero-page PTE is its own batch."""
    n = len(pfns)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pfns = np.asarray(pfns, dtype=np.int64)
    folio = ctx.kind[pfns - ctx.base_pfn] != ZERO
    frames = pfns >> HPAGE_PMD_ORDER
    thp = _thp_frames(ctx, frames)
    if not thp:
        starts = np.flatnonzero(folio)
        return starts, np.ones(starts.size, dtype=np.int64)
    heads = _heads_of(frames, thp)
    brk = np.ones(n, dtype=bool)
    if n > 1:
        idx = np.asarray(idx)
        brk[1:] = ~(
            (heads[1:] >= 0)
            & (heads[1:] == heads[:-1])
            & (np.diff(pfns) == 1)
            & (np.diff(idx) == 1)
        )
    bounds = np.flatnonzero(brk)
    sizes = np.diff(bounds, append=n)
    keep = folio[bounds]
    return bounds[keep], sizes[keep]


def folio_pte_batch_count(ctx: MmContext, idx: Any, pfns: Any) -> int:
    """How many folio batches :func:`folio_pte_batches` forms (``copy_present_ptes``
    only counts them)."""
    pfns = np.asarray(pfns, dtype=np.int64)
    if not pfns.size:
        return 0
    if not _thp_frames(ctx, pfns >> HPAGE_PMD_ORDER):
        return int(np.count_nonzero(ctx.kind[pfns - ctx.base_pfn] != ZERO))
    return int(folio_pte_batches(ctx, idx, pfns)[0].size)


def free_unmapped(ctx: MmContext, pfns: Any) -> None:
    """Free pages (ascending pfns) whose map count dropped to zero: small pages one
    by one (bulk), a THP folio as one order-9 block once all its subpages are unmapped."""
    pfns = np.asarray(pfns, dtype=np.int64)
    frames = pfns >> HPAGE_PMD_ORDER
    thp = _thp_frames(ctx, frames)
    pa = ctx.k.page_alloc
    if not thp:
        if pfns.size:
            pa.free_pages_bulk(pfns.tolist())
        return
    heads = _heads_of(frames, thp)
    small = pfns[heads < 0]
    if small.size:
        pa.free_pages_bulk(small.tolist())
    for h in unique_sorted(heads[heads >= 0]).tolist():
        i = h - ctx.base_pfn
        if not ctx.mapcount[i : i + _HPAGE_NR].any():
            ctx.kind[i : i + _HPAGE_NR] = 0
            pa.free_pages(h, HPAGE_PMD_ORDER)
