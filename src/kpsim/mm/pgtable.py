"""The page-table allocator door: ``pagetable_alloc()`` and ``pagetable_free()``.

Models ``include/linux/mm.h`` (``pagetable_alloc_noprof``, ``__pagetable_free``) and
the ptdesc constructor/destructor accounting (``pagetable_*_ctor``/``dtor``: PageTable
flag, ``NR_PAGETABLE``). After ``mem_init()`` every table page comes and goes through
here; the kpkeys seed patch hooks exactly these two functions. The hook slots are the
Python form of ``kpkeys_hardened_pgtables_enabled()`` (a static key): when set, the
kpkeys allocator is called instead of the buddy allocator.

Also keeps a registry of every live table page (level, owner, source) so the audit can
check the trees it walks against what was allocated. Left out: ptdesc split locks,
memcg charging, RCU-deferred freeing (tables are freed at once; pt-lifecycle.md §2.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from kpsim.mm.fault_inject import FaultAttr
from kpsim.mm.gfp import Gfp
from kpsim.mm.kernel import Kernel

LEVEL_NAMES: Final = ("pgd", "pud", "pmd", "pte")
#: ``gfp | __GFP_COMP`` by ``gfp`` (a pure function; IntFlag ``|`` is slow per call)
_WITH_COMP: Final[dict[Gfp, Gfp]] = {}


@dataclass(slots=True)
class TableInfo:
    level: int
    owner: str  # "kernel" or "mm:<id>"
    source: str  # "pagetable_alloc", "memblock", "static"


class PgtableAllocator:
    __slots__ = ("fail", "k", "kpkeys_alloc", "kpkeys_free", "live")

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.kpkeys_alloc: Callable[[Gfp, int], int | None] | None = None
        self.kpkeys_free: Callable[[int, int], None] | None = None
        self.live: dict[int, TableInfo] = {}
        #: ``fail_pagetable_alloc`` (:mod:`kpsim.mm.fault_inject`); None: injection off
        self.fail: FaultAttr | None = None

    def pagetable_alloc(self, gfp: Gfp, order: int = 0) -> int | None:
        """Allocate a table page (pfn) or return None; ``__GFP_COMP`` is always added."""
        comp = _WITH_COMP.get(gfp)
        if comp is None:
            comp = _WITH_COMP[gfp] = gfp | Gfp.COMP
        gfp = comp
        if self.fail is not None and self.fail.should_fail(1 << order):
            self.k.counters["pgtable_alloc_injected"] += 1
            return None
        if self.kpkeys_alloc is not None:
            pfn = self.kpkeys_alloc(gfp, order)
        else:
            pfn = self.k.page_alloc.alloc_pages(gfp, order)
        if pfn is not None:
            self.k.counters["pgtable_alloc"] += 1
        return pfn

    def pagetable_free(self, pfn: int) -> None:
        """``pagetable_free`` -> ``__pagetable_free``: back through kpkeys or to the buddy."""
        order = self.k.page_alloc.compound_order(pfn)
        self.k.counters["pgtable_free"] += 1
        if self.kpkeys_free is not None:
            self.kpkeys_free(pfn, order)
        else:
            self.k.page_alloc.free_pages(pfn, order)

    # -- constructor / destructor accounting ---------------------------------------
    def ctor(self, pfn: int, level: int, owner: str, source: str = "pagetable_alloc") -> None:
        """``pagetable_*_ctor``: mark PageTable and account it (``NR_PAGETABLE``)."""
        self.live[pfn] = TableInfo(level, owner, source)
        self.k.page_alloc.memmap.set_page_table(pfn)
        self.k.counters["PageTables"] += 1

    def dtor(self, pfn: int) -> None:
        """``pagetable_dtor``: clear PageTable and unaccount it."""
        self.live.pop(pfn, None)
        self.k.page_alloc.memmap.clear_page_table(pfn)
        self.k.counters["PageTables"] -= 1

    def alloc_table(self, gfp: Gfp, level: int, owner: str) -> int | None:
        """Allocate and construct one table page for ``level`` (0 = PGD .. 3 = PTE)."""
        pfn = self.pagetable_alloc(gfp)
        if pfn is not None:
            self.ctor(pfn, level, owner)
        return pfn

    def free_table(self, pfn: int) -> None:
        self.dtor(pfn)
        self.pagetable_free(pfn)

    def count(self, owner: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(LEVEL_NAMES, 0)
        for info in self.live.values():
            if owner is None or info.owner == owner:
                out[LEVEL_NAMES[info.level]] += 1
        return out
