"""The boot-time memory allocator: ``mm/memblock.c``.

Two region lists, ``memory`` and ``reserved``, each kept sorted and merged
(``memblock_add_range()`` / ``memblock_remove_range()``); allocation finds a free
range (memory minus reserved) TOP-DOWN by default, as
``__memblock_find_range_top_down()`` does: the highest aligned candidate below
``current_limit`` and at or above ``PAGE_SIZE``, then reserves it. Failure returns 0.

``memblock_free_all()`` (``mem_init()``) hands every free range, rounded inward to
whole pages, to the buddy allocator; after it, memblock allocations are refused with
:class:`kpsim.errors.ModelInvariantError` (in Linux they would hand out pages the
buddy allocator owns). ``memblock_free_late()`` then gives pages straight to the
buddy allocator and, like Linux, leaves the ``reserved`` list untouched.

Addresses are physical byte addresses (plain ints, ``PhysAddr`` at the boundary);
``memblock_free`` takes a physical address here (Linux's takes a virtual pointer and
``memblock_phys_free`` the physical one; both names are provided).

Left out: NUMA node ids, region flags (hotplug, mirror, nomap), the regions array
size limit and ``memblock_double_array()``, kmemleak, memblock debugging output.
"""

from __future__ import annotations

from collections.abc import Iterator

from kpsim.errors import ModelInvariantError
from kpsim.events import Counters, WarnEvent
from kpsim.mm.page_alloc import PageAllocator
from kpsim.units import PAGE_SHIFT, PAGE_SIZE

#: ``MEMBLOCK_ALLOC_ANYWHERE``: no upper limit.
MEMBLOCK_ALLOC_ANYWHERE = (1 << 64) - 1
#: ``MEMBLOCK_ALLOC_ACCESSIBLE``: up to ``memblock.current_limit``.
MEMBLOCK_ALLOC_ACCESSIBLE = 0
#: ``MEMBLOCK_ALLOC_NOLEAKTRACE``: as accessible, without kmemleak tracking.
MEMBLOCK_ALLOC_NOLEAKTRACE = 1
#: ``SMP_CACHE_BYTES``, used when a caller passes alignment 0 (with a warning).
SMP_CACHE_BYTES = 64

Range = tuple[int, int]  # [base, end)


def _union(regions: list[Range], base: int, end: int) -> list[Range]:
    """Add ``[base, end)``, merging overlapping and adjacent regions."""
    out: list[Range] = []
    for b, e in regions:
        if e < base or b > end:
            out.append((b, e))
        else:
            base, end = min(base, b), max(end, e)
    out.append((base, end))
    out.sort()
    return out


def _subtract(regions: list[Range], base: int, end: int) -> list[Range]:
    """Remove ``[base, end)``, splitting regions that straddle its edges."""
    out: list[Range] = []
    for b, e in regions:
        if e <= base or b >= end:
            out.append((b, e))
            continue
        if b < base:
            out.append((b, base))
        if e > end:
            out.append((end, e))
    return out


class MemblockType:
    """``struct memblock_type``: a sorted list of disjoint, non-adjacent regions."""

    __slots__ = ("name", "regions")

    def __init__(self, name: str) -> None:
        self.name = name
        self.regions: list[Range] = []

    def add_range(self, base: int, size: int) -> None:
        if size:
            self.regions = _union(self.regions, base, base + size)

    def remove_range(self, base: int, size: int) -> None:
        if size:
            self.regions = _subtract(self.regions, base, base + size)

    def total_size(self) -> int:
        return sum(e - b for b, e in self.regions)

    def overlaps(self, base: int, size: int) -> bool:
        return any(b < base + size and base < e for b, e in self.regions)

    def contains(self, addr: int) -> bool:
        return any(b <= addr < e for b, e in self.regions)

    def __iter__(self) -> Iterator[Range]:
        return iter(list(self.regions))

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        inner = ", ".join(f"[{b:#x}-{e - 1:#x}]" for b, e in self.regions)
        return f"memblock.{self.name}({inner})"


def _check_size(what: str, base: int, size: int) -> None:
    if base < 0 or size < 0:
        raise ModelInvariantError(f"{what}({base:#x}, {size:#x}): negative base or size")


class Memblock:
    """``struct memblock`` and the functions that use it."""

    __slots__ = (
        "_page_alloc",
        "bottom_up",
        "counters",
        "current_limit",
        "memory",
        "reserved",
        "warnings",
    )

    def __init__(self, warnings: list[WarnEvent] | None = None) -> None:
        self.memory = MemblockType("memory")
        self.reserved = MemblockType("reserved")
        self.current_limit = MEMBLOCK_ALLOC_ANYWHERE
        self.bottom_up = False
        self.counters = Counters()
        self.warnings: list[WarnEvent] = warnings if warnings is not None else []
        self._page_alloc: PageAllocator | None = None

    # -- regions ----------------------------------------------------------------------
    def memblock_add(self, base: int, size: int) -> int:
        """``memblock_add()``: register RAM ``[base, base + size)``; returns 0."""
        _check_size("memblock_add", base, size)
        self.memory.add_range(base, size)
        return 0

    def memblock_remove(self, base: int, size: int) -> int:
        """``memblock_remove()``: forget RAM ``[base, base + size)``; returns 0."""
        _check_size("memblock_remove", base, size)
        self.memory.remove_range(base, size)
        return 0

    def memblock_reserve(self, base: int, size: int) -> int:
        """``memblock_reserve()``: mark ``[base, base + size)`` in use; returns 0."""
        _check_size("memblock_reserve", base, size)
        self.reserved.add_range(base, size)
        return 0

    def memblock_phys_free(self, base: int, size: int) -> None:
        """``memblock_phys_free()``: drop a reservation (before ``memblock_free_all()``)."""
        _check_size("memblock_phys_free", base, size)
        self.reserved.remove_range(base, size)
        self.counters["memblock_free"] += 1

    memblock_free = memblock_phys_free

    def memblock_set_current_limit(self, limit: int) -> None:
        self.current_limit = limit

    def memblock_set_bottom_up(self, enable: bool) -> None:
        self.bottom_up = enable

    # -- allocation ---------------------------------------------------------------------
    def memblock_phys_alloc(self, size: int, align: int) -> int:
        """``memblock_phys_alloc()``: reserve ``size`` bytes below the limit; 0 on failure."""
        return self.memblock_phys_alloc_range(size, align, 0, MEMBLOCK_ALLOC_ACCESSIBLE)

    def memblock_phys_alloc_range(self, size: int, align: int, start: int, end: int) -> int:
        """``memblock_phys_alloc_range()`` / ``memblock_alloc_range_nid()``."""
        if self._page_alloc is not None:
            raise ModelInvariantError(
                "memblock_phys_alloc after memblock_free_all(): the buddy allocator owns memory"
            )
        if align == 0:
            self.warnings.append(
                WarnEvent("memblock_alloc_range_nid", "align 0: use SMP_CACHE_BYTES")
            )
            align = SMP_CACHE_BYTES
        if align < 0 or align & (align - 1):
            raise ModelInvariantError(f"memblock alignment {align:#x} is not a power of two")
        found = self.memblock_find_in_range(size, align, start, end) if size > 0 else 0
        if not found:
            self.counters["memblock_alloc_fail"] += 1
            return 0
        self.memblock_reserve(found, size)
        self.counters["memblock_alloc"] += 1
        self.counters["memblock_alloc_bytes"] += size
        return found

    def memblock_find_in_range(self, size: int, align: int, start: int, end: int) -> int:
        """``memblock_find_in_range_node()``: a free aligned base in [start, end), or 0."""
        if end in (MEMBLOCK_ALLOC_ACCESSIBLE, MEMBLOCK_ALLOC_NOLEAKTRACE):
            end = self.current_limit
        start = max(start, PAGE_SIZE)  # never hand out the first page
        end = max(start, end)
        if self.bottom_up:
            return self._find_bottom_up(size, align, start, end)
        return self._find_top_down(size, align, start, end)

    def _find_top_down(self, size: int, align: int, start: int, end: int) -> int:
        """``__memblock_find_range_top_down()``."""
        for this_start, this_end in reversed(self._free_ranges()):
            this_start = min(max(this_start, start), end)
            this_end = min(max(this_end, start), end)
            if this_end < size:
                continue
            cand = (this_end - size) & ~(align - 1)
            if cand >= this_start:
                return cand
        return 0

    def _find_bottom_up(self, size: int, align: int, start: int, end: int) -> int:
        """``__memblock_find_range_bottom_up()``."""
        for this_start, this_end in self._free_ranges():
            this_start = min(max(this_start, start), end)
            this_end = min(max(this_end, start), end)
            cand = (this_start + align - 1) & ~(align - 1)
            if cand < this_end and this_end - cand >= size:
                return cand
        return 0

    # -- iteration ----------------------------------------------------------------------
    def _free_ranges(self) -> list[Range]:
        """Memory minus reserved, ascending (``__next_mem_range()`` over both types)."""
        out: list[Range] = []
        res = self.reserved.regions
        j = 0
        for mem_base, mem_end in self.memory.regions:
            cur = mem_base
            while j < len(res) and res[j][1] <= cur:
                j += 1
            k = j
            while k < len(res) and res[k][0] < mem_end:
                if res[k][0] > cur:
                    out.append((cur, res[k][0]))
                cur = max(cur, res[k][1])
                k += 1
            if cur < mem_end:
                out.append((cur, mem_end))
        return out

    def for_each_free_mem_range(self) -> Iterator[Range]:
        """``for_each_free_mem_range()``: ``(start, end)`` of free memory, ascending."""
        return iter(self._free_ranges())

    def for_each_free_mem_range_reverse(self) -> Iterator[Range]:
        return reversed(self._free_ranges())

    def for_each_mem_range(self) -> Iterator[Range]:
        return iter(self.memory)

    def for_each_reserved_mem_range(self) -> Iterator[Range]:
        return iter(self.reserved)

    def memory_regions(self) -> list[tuple[int, int]]:
        """``for_each_mem_region()``: ``(base, size)`` of every memory region."""
        return [(b, e - b) for b, e in self.memory.regions]

    def reserved_regions(self) -> list[tuple[int, int]]:
        """``(base, size)`` of every reserved region."""
        return [(b, e - b) for b, e in self.reserved.regions]

    # -- queries ------------------------------------------------------------------------
    def memblock_phys_mem_size(self) -> int:
        return self.memory.total_size()

    def memblock_reserved_size(self) -> int:
        return self.reserved.total_size()

    def memblock_start_of_DRAM(self) -> int:
        if not self.memory.regions:
            raise ModelInvariantError("memblock has no memory")
        return self.memory.regions[0][0]

    def memblock_end_of_DRAM(self) -> int:
        if not self.memory.regions:
            raise ModelInvariantError("memblock has no memory")
        return self.memory.regions[-1][1]

    def memblock_is_memory(self, addr: int) -> bool:
        return self.memory.contains(addr)

    def memblock_is_region_reserved(self, base: int, size: int) -> bool:
        return self.reserved.overlaps(base, size)

    # -- handing over to the buddy allocator --------------------------------------------
    @property
    def freed_all(self) -> bool:
        """Has ``memblock_free_all()`` run (memblock allocations now refused)?"""
        return self._page_alloc is not None

    def memblock_free_all(self, page_alloc: PageAllocator) -> int:
        """``memblock_free_all()``: give every free page to ``page_alloc``; returns the count."""
        if self._page_alloc is not None:
            raise ModelInvariantError("memblock_free_all() called twice")
        total = 0
        for start, end in self._free_ranges():  # __free_memory_core()
            start_pfn = (start + PAGE_SIZE - 1) >> PAGE_SHIFT
            end_pfn = end >> PAGE_SHIFT
            if start_pfn < end_pfn:
                total += page_alloc.free_range(start_pfn, end_pfn)
        self._page_alloc = page_alloc
        self.counters["memblock_pages_released"] += total
        return total

    def memblock_free_late(self, base: int, size: int) -> int:
        """``memblock_free_late()``: whole pages of ``[base, base + size)`` to the buddy."""
        _check_size("memblock_free_late", base, size)
        if self._page_alloc is None:
            raise ModelInvariantError("memblock_free_late() before memblock_free_all()")
        start_pfn = (base + PAGE_SIZE - 1) >> PAGE_SHIFT
        end_pfn = (base + size) >> PAGE_SHIFT
        if start_pfn >= end_pfn:
            return 0
        freed = self._page_alloc.free_range(start_pfn, end_pfn)
        self.counters["memblock_pages_released"] += freed
        return freed
