"""A per-CPU x86 TLB keyed by PCID and page (Intel SDM vol. 3A 4.10).

Entries are :class:`~kpsim.hw.x86.mmu.Leaf` values keyed by (PCID, page size, page
number); global entries (G=1 in the leaf, cached while CR4.PGE=1) are shared by every
PCID. Like hardware the TLB never notices page-table writes: a changed entry stays
stale until software invalidates it. The protection key is part of the entry; the
rights it grants are read from PKRU/IA32_PKRS on every access, so a WRMSR to
IA32_PKRS changes them without a flush (SDM 4.10.2.2).

Invalidation (SDM 4.10.4.1): INVLPG drops the page's entries for the current PCID and
global entries; INVPCID type 0 one address of one PCID (non-global), type 1 a whole
PCID (non-global), type 2 everything, type 3 everything but global entries. MOV to CR3
drops the new PCID's non-global entries unless bit 63 (no-flush) is set with
CR4.PCIDE=1; toggling CR4.PGE or clearing CR4.PCIDE drops everything.

Left out: capacity and replacement (entries live until invalidated: the worst case
for staleness) and the paging-structure caches (no PML4/PDPT/PD caching: every miss
walks from CR3), which SDM 4.10.3 allows but does not require.
"""

from __future__ import annotations

from kpsim.hw.x86.mmu import Leaf

_SHIFTS = (12, 21, 30)


class Tlb:
    __slots__ = ("entries", "globals")

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int, int], Leaf] = {}
        self.globals: dict[tuple[int, int], Leaf] = {}

    def __len__(self) -> int:
        return len(self.entries) + len(self.globals)

    def lookup(self, pcid: int, va: int) -> Leaf | None:
        for shift in _SHIFTS:
            leaf = self.globals.get((shift, va >> shift))
            if leaf is not None:
                return leaf
            leaf = self.entries.get((pcid, shift, va >> shift))
            if leaf is not None:
                return leaf
        return None

    def fill(self, pcid: int, va: int, leaf: Leaf, *, pge: bool) -> None:
        shift = leaf.shift
        if leaf.global_ and pge:
            self.globals[(shift, va >> shift)] = leaf
        else:
            self.entries[(pcid, shift, va >> shift)] = leaf

    def drop_page(self, pcid: int, va: int, *, globals_: bool) -> None:
        """The entries of ``pcid`` (and global ones if ``globals_``) covering ``va``."""
        for shift in _SHIFTS:
            self.entries.pop((pcid, shift, va >> shift), None)
            if globals_:
                self.globals.pop((shift, va >> shift), None)

    def drop_pcid(self, pcid: int) -> None:
        for key in [k for k in self.entries if k[0] == pcid]:
            del self.entries[key]

    def drop_non_global(self) -> None:
        self.entries.clear()

    def drop_all(self) -> None:
        self.entries.clear()
        self.globals.clear()
