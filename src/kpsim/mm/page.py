"""``struct page`` metadata: ``include/linux/mm_types.h``, ``page-flags.h``.

Only the fields kpsim needs: flags (PageReserved, PageBuddy, PageHead, PageTable,
anon/file, slab, vmalloc), the compound order, an owner tag (as page_owner would
record), ``private`` and ``mapping`` (the v6 block allocator keeps per-page data in
``page->mapping``).

The memory map is SPARSE: a 1 TiB machine has 2^28 frames and must not pay for them
up front. :class:`MemMap` keeps a ``dict`` from pfn to a small slotted :class:`Page`
created on first use and dropped again when the page returns to its default state.
Flags that follow from allocator state (PageBuddy on the head of a free block,
PageReserved on a page the buddy allocator never received) are not stored: they are
*derived* through a callback the allocator installs, so they cannot go stale.

Left out: refcounts and mapcounts, folios as a type, page_ext, LRU lists, memcg.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Final

from kpsim.errors import ModelInvariantError


class PageFlags(enum.IntFlag):
    """Page flags and page types the model tracks (names as ``PageXxx()`` tests)."""

    RESERVED = 1 << 0  # PG_reserved: never handed to the buddy allocator (derived)
    BUDDY = 1 << 1  # PG_buddy page type: head of a free block (derived)
    HEAD = 1 << 2  # PG_head: compound head; Page.order holds the compound order
    TABLE = 1 << 3  # PG_table page type: a page-table page (pagetable_ctor)
    ANON = 1 << 4  # PageAnon: mapping points at an anon_vma
    FILE = 1 << 5  # a page-cache page (mapping points at an address_space)
    SLAB = 1 << 6  # PG_slab page type
    VMALLOC = 1 << 7  # backs a vmalloc area (tag only; Linux has no flag)
    # bits 8..15 are free for later issues


#: Flags that must be clear when a page is freed (Linux: bad_page() on free).
PAGE_FLAGS_CHECK_AT_FREE: Final = PageFlags.TABLE | PageFlags.ANON | PageFlags.FILE | PageFlags.SLAB
#: Flags that are computed from allocator state and never stored.
DERIVED_FLAGS: Final = PageFlags.RESERVED | PageFlags.BUDDY

_CHECK_AT_FREE: Final = int(PAGE_FLAGS_CHECK_AT_FREE)
_DERIVED: Final = int(DERIVED_FLAGS)
_TABLE: Final = int(PageFlags.TABLE)


class Page:
    """The stored part of one ``struct page`` (only pages not in default state)."""

    __slots__ = ("flags", "mapping", "order", "owner", "private")

    def __init__(self) -> None:
        self.flags = 0
        self.order = 0
        self.owner: str | None = None
        self.private = 0
        self.mapping = 0

    def is_default(self) -> bool:
        return not (self.flags or self.order or self.private or self.mapping) and (
            self.owner is None
        )

    def __repr__(self) -> str:
        return (
            f"Page(flags={PageFlags(self.flags)!r}, order={self.order}, "
            f"owner={self.owner!r}, private={self.private:#x}, mapping={self.mapping:#x})"
        )


DeriveFlags = Callable[[int], int]


def _no_derived(pfn: int) -> int:
    return 0


class MemMap:
    """Sparse ``mem_map``: pfn -> :class:`Page`, created on demand, for one pfn span."""

    __slots__ = ("derive", "end_pfn", "pages", "start_pfn")

    def __init__(self, start_pfn: int, end_pfn: int, derive: DeriveFlags | None = None) -> None:
        if not 0 <= start_pfn < end_pfn:
            raise ModelInvariantError(f"empty memmap span [{start_pfn:#x}, {end_pfn:#x})")
        self.start_pfn = start_pfn
        self.end_pfn = end_pfn
        self.pages: dict[int, Page] = {}
        self.derive: DeriveFlags = derive if derive is not None else _no_derived

    # -- access ----------------------------------------------------------------
    def check_pfn(self, pfn: int) -> None:
        """``pfn_valid()`` as a BUG_ON: there is no struct page outside the span."""
        if not self.start_pfn <= pfn < self.end_pfn:
            raise ModelInvariantError(f"pfn {pfn:#x} has no struct page")

    def page(self, pfn: int) -> Page:
        """``pfn_to_page()``: the stored metadata of ``pfn``, created if absent."""
        p = self.pages.get(pfn)
        if p is None:
            self.check_pfn(pfn)
            p = self.pages[pfn] = Page()
        return p

    def peek(self, pfn: int) -> Page | None:
        """The stored metadata of ``pfn``, or None when the page is in default state."""
        return self.pages.get(pfn)

    def drop_if_default(self, pfn: int) -> None:
        p = self.pages.get(pfn)
        if p is not None and p.is_default():
            del self.pages[pfn]

    def reset(self, pfn: int) -> Page | None:
        """Forget everything stored about ``pfn``; return what was stored."""
        return self.pages.pop(pfn, None)

    # -- flags -----------------------------------------------------------------
    def page_flags(self, pfn: int) -> PageFlags:
        """Stored flags plus those derived from allocator state (Buddy, Reserved)."""
        self.check_pfn(pfn)
        p = self.pages.get(pfn)
        stored = 0 if p is None else p.flags
        return PageFlags(stored | self.derive(pfn))

    def set_flags(self, pfn: int, flags: PageFlags | int) -> None:
        f = int(flags)
        if f & _DERIVED:
            raise ModelInvariantError(f"{PageFlags(f)!r} is derived from allocator state")
        self.page(pfn).flags |= f

    def clear_flags(self, pfn: int, flags: PageFlags | int) -> None:
        p = self.pages.get(pfn)
        if p is not None:
            p.flags &= ~int(flags)
            if p.is_default():
                del self.pages[pfn]

    def test_flags(self, pfn: int, flags: PageFlags | int) -> bool:
        """True when every flag in ``flags`` is set on ``pfn`` (stored or derived)."""
        f = int(flags)
        return int(self.page_flags(pfn)) & f == f

    # -- PageTable -------------------------------------------------------------
    def set_page_table(self, pfn: int) -> None:
        """``__SetPageTable()`` (pagetable_ctor): mark ``pfn`` as a page-table page."""
        self.page(pfn).flags |= _TABLE

    def clear_page_table(self, pfn: int) -> None:
        """``__ClearPageTable()`` (pagetable_dtor)."""
        self.clear_flags(pfn, _TABLE)

    def is_page_table(self, pfn: int) -> bool:
        """``PageTable()``."""
        p = self.pages.get(pfn)
        return p is not None and bool(p.flags & _TABLE)

    # -- owner tags (page_owner) --------------------------------------------------
    def set_owner(self, pfn: int, owner: str | None) -> None:
        if owner is None:
            p = self.pages.get(pfn)
            if p is not None:
                p.owner = None
                if p.is_default():
                    del self.pages[pfn]
            return
        self.page(pfn).owner = owner

    def owner(self, pfn: int) -> str | None:
        p = self.pages.get(pfn)
        return None if p is None else p.owner

    # -- iteration -------------------------------------------------------------
    def pfns_with(self, flags: PageFlags | int) -> Iterator[int]:
        """Pfns (ascending) whose STORED flags include any of ``flags``."""
        f = int(flags)
        return iter(sorted(pfn for pfn, p in self.pages.items() if p.flags & f))

    def count_with(self, flags: PageFlags | int) -> int:
        f = int(flags)
        return sum(1 for p in self.pages.values() if p.flags & f)

    def bad_at_free(self, pfn: int) -> str | None:
        """Why freeing ``pfn`` would be a bad page state (``page_expected_state()``)."""
        p = self.pages.get(pfn)
        if p is None:
            return None
        if p.mapping:
            return "non-NULL mapping"
        if p.flags & _CHECK_AT_FREE:
            return f"{PageFlags(p.flags & _CHECK_AT_FREE)!r} still set"
        return None

    def __len__(self) -> int:
        return len(self.pages)
