"""A per-CPU TLB that caches leaf translations until software invalidates them.

Like real hardware it never notices page-table writes: a changed descriptor stays
stale in every TLB that cached it until a TLBI removes it, which is exactly what
makes a forgotten TLBI observable in the model.

Entries are tuples ``(page_pa, perm_el1, perm_el0, po_index, level, desc, frame)``
keyed by page number (plus the ASID for non-global entries), so a hit costs one
dict lookup. A block or contiguous leaf is cached page by page but indexed by its
span so that a TLBI by any VA inside it drops every page of it, as invalidating the
one real block entry would.

Left out: capacity and replacement (entries live until invalidated: the worst case
for staleness), walk caches, VMIDs, and the TLBI "last level only" variants.
"""

from __future__ import annotations

from typing import Any

from kpsim.hw.arm64.mmu import KERNEL_VA_START

ASID_SHIFT = 36  # user VPNs are below 2**36 with a 48-bit VA
SPAN_SHIFTS = (16, 21, 25, 30)  # 64K contPTE, 2M block, 32M contPMD, 1G block

TlbEntry = tuple[int, int, int, int, int, int, Any]


def tlb_key(va: int, asid: int, global_: bool) -> int:
    if va >= KERNEL_VA_START or global_:
        return va >> 12
    return (asid << ASID_SHIFT) | (va >> 12)


class Tlb:
    __slots__ = ("entries", "spans")

    def __init__(self) -> None:
        self.entries: dict[int, TlbEntry] = {}
        self.spans: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def insert(self, key: int, entry: TlbEntry, span_shift: int) -> None:
        self.entries[key] = entry
        if span_shift > 12:
            self.spans.setdefault((span_shift, key >> (span_shift - 12)), []).append(key)

    def _drop_key(self, key: int) -> None:
        self.entries.pop(key, None)
        for shift in SPAN_SHIFTS:
            keys = self.spans.pop((shift, key >> (shift - 12)), None)
            if keys:
                for k in keys:
                    self.entries.pop(k, None)

    def invalidate_va(self, va: int, asid: int | None) -> None:
        """TLBI VAE1 (``asid`` given) or VAAE1 (all ASIDs) for the page holding ``va``."""
        vpn = va >> 12
        self._drop_key(vpn)
        if va >= KERNEL_VA_START:
            return
        if asid is not None:
            self._drop_key((asid << ASID_SHIFT) | vpn)
            return
        for key in [k for k in self.entries if k & ((1 << ASID_SHIFT) - 1) == vpn]:
            self._drop_key(key)

    def invalidate_range(self, start: int, end: int, asid: int | None) -> None:
        """Invalidate every page in [start, end), looping over whichever is smaller."""
        npages = (end - start + 0xFFF) >> 12
        if npages <= len(self.entries):
            for va in range(start & ~0xFFF, end, 0x1000):
                self.invalidate_va(va, asid)
            return
        lo, hi = start >> 12, (end + 0xFFF) >> 12
        mask = (1 << ASID_SHIFT) - 1
        victims = []
        for key, e in self.entries.items():
            if key >= (1 << 52):  # a kernel-half page number
                if lo <= key < hi:
                    victims.append(key)
                continue
            vpn = key & mask
            k_asid = key >> ASID_SHIFT
            if lo <= vpn < hi and (asid is None or k_asid == asid or e[5] & (1 << 11) == 0):
                victims.append(key)
        for key in victims:
            self._drop_key(key)

    def invalidate_asid(self, asid: int) -> None:
        """TLBI ASIDE1: every non-global entry tagged with ``asid``."""
        for key in [k for k in self.entries if k < (1 << 52) and k >> ASID_SHIFT == asid]:
            self.entries.pop(key, None)

    def invalidate_all(self) -> None:
        """TLBI VMALLE1."""
        self.entries.clear()
        self.spans.clear()
