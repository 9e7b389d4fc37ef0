"""Watch the buddy allocator's free path: no page may reach it while keyed.

The seed's ``kpkeys_pgtable_free()`` restores ``KPKEYS_PKEY_DEFAULT`` on a table page
*before* ``__free_pages()`` hands it back (spec §4.5). The end-of-run audit cannot see
the order of those two steps (a page freed first and re-keyed afterwards looks the
same at rest), so :class:`FreeWatch` checks it at the moment it happens: while the
watch is active, ``k.page_alloc`` is a thin proxy whose ``free_pages`` and
``free_pages_bulk`` read the linear-map pkey of every page freed through the MMU walk
(one walk per 2 MiB of physical memory: one leaf table or one block mapping) and
record a violation for any page that still carries a non-zero pkey.

It also counts the page-table pages the kernel freed (through the ``kpkeys_free`` hook
slot of ``pagetable_free``) and how many of them reached the buddy allocator while
watched, so a test can show that every one went back to pkey 0 first. A protected
allocator that caches freed table pages (the PBA) keeps them out of the buddy
allocator; when it later releases them, those frees are checked like any other.

This is test and audit instrumentation, not a model of kernel code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from kpsim.audit.invariants import Violation
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import walk

_OWN = frozenset({"_real", "_watch"})


class _CheckedPageAllocator:
    """Forwards everything to the real allocator; checks ``free_pages`` first."""

    def __init__(self, real: Any, watch: FreeWatch) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_watch", watch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._real, name, value)

    def free_pages(self, pfn: int, order: int = 0) -> None:
        self._watch.check_free(pfn, order)
        self._real.free_pages(pfn, order)

    def free_pages_bulk(self, pfns: list[int]) -> None:
        self._watch.check_free_bulk(pfns)
        self._real.free_pages_bulk(pfns)


class FreeWatch:
    """Context manager: ``with FreeWatch(m) as w: ...``; then ``w.violations``."""

    def __init__(self, m: Any) -> None:
        self.m = m
        self.violations: list[Violation] = []
        self.pages_checked = 0  # pages handed to the buddy allocator while watched
        self.pgtable_pages_freed = 0  # table pages the kernel freed (pagetable_free)
        self.pgtable_pages_to_buddy = 0  # ... of which reached the buddy allocator
        self._in_flight: set[int] = set()  # table pages between pagetable_free and buddy
        self._released: set[int] = set()  # table pages kept by a cache, not yet in buddy
        self._real: Any = None
        self._orig_free: Callable[[int, int], None] | None = None

    # -- install / remove -----------------------------------------------------------
    def __enter__(self) -> FreeWatch:
        k = self.m.k
        self._real = k.page_alloc
        k.page_alloc = _CheckedPageAllocator(self._real, self)
        self._orig_free = k.pgtable.kpkeys_free
        if self._orig_free is not None:
            k.pgtable.kpkeys_free = self._kpkeys_free
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        k = self.m.k
        k.page_alloc = self._real
        if self._orig_free is not None and k.pgtable.kpkeys_free == self._kpkeys_free:
            k.pgtable.kpkeys_free = self._orig_free

    # -- hooks ------------------------------------------------------------------------
    def _kpkeys_free(self, pfn: int, order: int) -> None:
        pages = range(pfn, pfn + (1 << order))
        self.pgtable_pages_freed += len(pages)
        self._in_flight.update(pages)
        try:
            assert self._orig_free is not None
            self._orig_free(pfn, order)
        finally:
            left = self._in_flight.intersection(pages)
            self._in_flight.difference_update(pages)
            self._released.update(left)  # kept by the allocator (a cache)

    def check_free(self, pfn: int, order: int) -> None:
        """Called on entry to ``free_pages``: every page of the block must have pkey 0."""
        self._check(range(pfn, pfn + (1 << order)), f"free_pages order {order}")

    def check_free_bulk(self, pfns: Iterable[int]) -> None:
        """Called on entry to ``free_pages_bulk`` (order-0 pages)."""
        self._check(list(pfns), "free_pages_bulk")

    def _check(self, pfns: Sequence[int], how: str) -> None:
        self.pages_checked += len(pfns)
        if self._in_flight or self._released:
            for p in pfns:
                if p in self._in_flight:
                    self._in_flight.discard(p)
                    self.pgtable_pages_to_buddy += 1
                elif p in self._released:
                    self._released.discard(p)
                    self.pgtable_pages_to_buddy += 1
        for p, pkey in self.keyed_pages(pfns):
            self.violations.append(
                Violation(
                    "free-keyed",
                    f"pfn {p:#x} reached the buddy allocator ({how}) "
                    f"with pkey {pkey} in the linear map",
                )
            )

    def keyed_pages(self, pfns: Sequence[int]) -> list[tuple[int, int]]:
        """(pfn, pkey) for the pages among ``pfns`` whose linear alias is keyed: one
        walk per 2 MiB of physical memory (one leaf table, or one block mapping)."""
        if getattr(self.m.arch, "name", "arm64") == "x86":
            from kpsim.audit import x86

            return x86.keyed_pages(self.m, pfns)
        groups: dict[int, list[int]] = {}
        for p in pfns:
            groups.setdefault(p >> 9, []).append(p)
        m = self.m
        mem = m.mem
        out: list[tuple[int, int]] = []
        for group in groups.values():
            t = walk(mem, m.arch.swapper_pg_dir, m.arch.layout.pfn_to_virt(group[0]))
            if isinstance(t, Fault):
                continue  # not in the linear map (e.g. removed): nothing to check
            if t.level < 3:
                if t.po_index:
                    out += [(p, t.po_index) for p in group]
                continue
            first = group[0] - ((t.desc_pa & 0xFFF) >> 3)  # the pfn entry 0 maps
            entries = mem.frame_ro(t.desc_pa >> 12)
            idx = np.asarray(group, dtype=np.int64) - first
            pkeys = (entries[idx] >> np.uint64(60)) & np.uint64(7)
            out += [(group[int(i)], int(pkeys[i])) for i in np.flatnonzero(pkeys)]
        return out

    # -- summary ----------------------------------------------------------------------
    @property
    def held(self) -> frozenset[int]:
        """Table pages freed while watched that never reached the buddy allocator (kept
        by a caching allocator; possibly handed out again as tables since)."""
        return frozenset(self._released)

    def as_dict(self) -> dict[str, int]:
        return {
            "pages_freed_checked": self.pages_checked,
            "pgtable_pages_freed": self.pgtable_pages_freed,
            "pgtable_pages_to_buddy": self.pgtable_pages_to_buddy,
            "pgtable_pages_held": len(self._released),
        }
