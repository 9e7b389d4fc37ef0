"""A per-CPU TLB that caches leaf translations until software invalidates them.

Like real hardware it never notices page-table writes: a changed descriptor stays
stale in every TLB that cached it until a TLBI removes it, which is exactly what
makes a forgotten TLBI observable in the model.

Entries are tuples ``(page_pa, perm_el1, perm_el0, po_index, level, desc, frame)``
keyed by page number, so a hit costs one dict lookup. Kernel-half and global
entries are keyed by the page number alone (below 2**52) in :attr:`Tlb.entries`;
non-global user entries carry ``ASID + 1`` above bit 52, so no ASID (0 and 0xffff
included) aliases a global or kernel entry, and a non-canonical VA never matches a
cached page. They live in one dict per ASID (:attr:`Tlb.asids`), so that TLBI
ASIDE1 drops a whole address space at once. A
block or contiguous leaf is cached page by page but indexed by its span so that a
TLBI by any VA inside it drops every page of it, as invalidating the one real
block entry would.

Walk cache (:attr:`Tlb.walks`): per tag (0 for the kernel half, ASID + 1 for the user
half) the level 0-2 table descriptors of walks that reached a level-3 table, keyed by
``va >> 21`` (see :func:`~kpsim.hw.arm64.mmu.walk_entry_wc`). Arm allows table entries
to be cached; invalidation follows the Arm ARM TLBI rules: TLBI by VA (VAE1, VAAE1)
drops the walk-cache entries used to translate that VA (the ASID's, or every ASID's
for VAAE1; kernel-half ones for any ASID), ASIDE1 those of the ASID, VMALLE1 all.
The last-level variants (VALE1, VAALE1) need not drop them: with ``last_level`` they
keep them (the worst case for staleness). The system's broadcast TLBIs do not say
which variant they are and pass no ``last_level``, so every TLBI by VA drops the walk
cache as well (an implementation may invalidate more than required).

Bulk tier (:attr:`Tlb.bulk`, a storage layout, not an architectural feature): page
entries that a batched path fills many at a time (the user pages of a run of faults,
the linear-map aliases ``clear_page`` wrote) are kept per tag and 2 MiB region as one
array of their level-3 descriptors with the rights they were filled with, instead of
one tuple each. Such an entry is the same cached translation as the tuple would be:
every lookup that misses the dicts consults the bulk tier before walking, and a hit
there moves the entry into the dicts (:meth:`Tlb.bulk_take`); every invalidation
drops bulk entries exactly as it drops dict entries; :meth:`Tlb.get`, :meth:`Tlb.items`
and ``len`` see both. A key is never in both tiers. ``clear_page`` of one page files
its linear-map alias here too (:meth:`Tlb.bulk_put`), and a bulk entry holds no frame:
the frame is looked up, or made if it was never written, when the entry is used or
listed (:meth:`Tlb._expand`), so a page that is only ever zeroed costs 8 bytes of TLB
and no host frame.

Left out: capacity and replacement (entries live until invalidated: the worst case
for staleness), VMIDs, and nG on kernel-half entries (no KPTI: the kernel half is
treated as global).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

import numpy as np

from kpsim.hw.arm64.descriptors import CONT, LEVEL_SHIFT, OA_MASK
from kpsim.hw.arm64.frame_arena import ARENA
from kpsim.hw.arm64.mmu import KERNEL_VA_START, USER_VA_END, LeafEntry, walk_entry_wc
from kpsim.hw.physmem import PhysicalMemory

ASID_SHIFT: Final = 52  # above every page number of a 64-bit VA (va >> 12 < 2**52)
VPN_MASK: Final = (1 << ASID_SHIFT) - 1
USER_VPN_END: Final = USER_VA_END >> 12
SPAN_SHIFTS: Final = (16, 21, 25, 30, 34)  # 64K contPTE, 2M, 32M contPMD, 1G, 16G contPUD

TlbEntry = tuple[int, int, int, int, int, int, Any]
#: A walk-cache entry: (level-3 table pa, the table bits gathered above it)
WalkEntry = tuple[int, int]


def asid_tag(asid: int) -> int:
    """The high bits of a non-global entry's key: ASID + 1, above every page number."""
    return (asid + 1) << ASID_SHIFT


def tlb_key(va: int, asid: int, global_: bool) -> int:
    if va >= KERNEL_VA_START or global_:
        return va >> 12
    return asid_tag(asid) | (va >> 12)


def page_va(key: int) -> tuple[int, int | None]:
    """The VA of the page a key caches, and its ASID (None: a global or kernel entry)."""
    tag = key >> ASID_SHIFT
    return (key & VPN_MASK) << 12, (tag - 1 if tag else None)


def span_pages(entry: TlbEntry) -> int:
    """4K pages covered by the leaf an entry came from (block or contiguous run)."""
    shift = LEVEL_SHIFT[entry[4]] + (4 if entry[5] & CONT else 0)
    return 1 << (shift - 12)


class BulkRun:
    """Bulk-filled page entries of one tag and 2 MiB region: the level-3 descriptor of
    each page (0: not cached), and the EL1 and EL0 rights they were filled with."""

    __slots__ = ("descs", "el0", "el1")

    def __init__(self, el1: int, el0: int) -> None:
        self.descs: Any = np.zeros(512, dtype=np.uint64)
        self.el1 = el1
        self.el0 = el0


class Tlb:
    """Global/kernel entries, per-ASID user entries, and the span groups of
    block/contiguous leaves."""

    __slots__ = ("asids", "bulk", "entries", "mem", "spans", "user_global", "walks")

    def __init__(self) -> None:
        self.entries: dict[int, TlbEntry] = {}
        self.asids: dict[int, dict[int, TlbEntry]] = {}  # ASID + 1 -> key -> entry
        self.spans: dict[tuple[int, int], set[int]] = {}
        self.walks: dict[int, dict[int, WalkEntry]] = {}  # 0 / ASID + 1 -> va >> 21 -> entry
        #: whether a global entry for a user-half VA was ever cached (sticky: a batch
        #: that finds it False need not look for one; kernel page tables never make one)
        self.user_global = False
        #: tag (0: global/kernel, ASID + 1) -> region (vpn >> 9) -> bulk-filled entries
        self.bulk: dict[int, dict[int, BulkRun]] = {}
        #: where bulk entries find their frames (set by the CPU that owns this TLB)
        self.mem: PhysicalMemory | None = None

    # -- walk cache ------------------------------------------------------------------
    def walk(self, mem: PhysicalMemory, table_pa: int, va: int, tag: int) -> LeafEntry | int:
        """The table walk of a TLB miss through this CPU's walk cache for ``tag`` (0:
        the kernel half, ASID + 1: the user half under that ASID)."""
        return walk_entry_wc(mem, table_pa, va, self.walks, tag)

    def walk_cached(self, va: int, tag: int) -> WalkEntry | None:
        """The walk-cache entry that would serve ``va`` under ``tag`` (for tests)."""
        wc = self.walks.get(tag)
        return None if wc is None else wc.get(va >> 21)

    def _drop_walks(self, lo: int, hi: int, tags: list[int]) -> None:
        """Drop the walk-cache entries of tags ``tags`` for VAs in [lo, hi)."""
        for tag in tags:
            wc = self.walks.get(tag)
            if not wc:
                continue
            a, b = lo >> 21, ((hi - 1) >> 21) + 1
            if len(wc) <= b - a:
                for k in [k for k in wc if a <= k < b]:
                    del wc[k]
            else:
                for k in range(a, b):
                    wc.pop(k, None)

    def _walk_tags(self, va: int, asid: int | None) -> list[int]:
        if va >= KERNEL_VA_START:
            return [0]
        if asid is not None:
            return [asid + 1]
        return [t for t in self.walks if t]

    def __len__(self) -> int:
        bulk = sum(int(np.count_nonzero(r.descs)) for t in self.bulk.values() for r in t.values())
        return len(self.entries) + sum(len(d) for d in self.asids.values()) + bulk

    def get(self, key: int) -> TlbEntry | None:
        if key > VPN_MASK:
            d = self.asids.get(key >> ASID_SHIFT)
            e = None if d is None else d.get(key)
        else:
            e = self.entries.get(key)
        return e if e is not None or not self.bulk else self.bulk_peek(key)

    def items(self) -> list[tuple[int, TlbEntry]]:
        out = list(self.entries.items())
        for d in self.asids.values():
            out.extend(d.items())
        for tag, runs in self.bulk.items():
            for region, run in runs.items():
                base = (tag << ASID_SHIFT) | (region << 9)
                for i in np.flatnonzero(run.descs).tolist():
                    out.append((base | i, self._expand(run.descs.item(i), run)))
        return out

    # -- the bulk tier -----------------------------------------------------------------
    def _expand(self, desc: int, run: BulkRun) -> TlbEntry:
        """The entry tuple of a bulk-filled level-3 page descriptor, with its frame
        (made now if the fill left it unmade: :meth:`bulk_put` keeps none)."""
        mem = self.mem
        assert mem is not None
        pa = desc & OA_MASK
        frame = mem.frames.get(pa >> 12)
        if frame is None:  # a never-written frame (it reads zero): storage from the arena
            frame = mem.frames[pa >> 12] = ARENA.take_one()
        return (pa, run.el1, run.el0, (desc >> 60) & 7, 3, desc, frame)

    def bulk_put(self, vpn: int, desc: int, el1: int, el0: int) -> bool:
        """Cache one kernel-half level-3 page entry (``vpn``: not cached now, the caller
        looked) in the bulk tier; False, with nothing cached, when its 2 MiB region
        holds bulk entries filled with other rights. Unlike a dict entry it holds no
        frame: a frame is made only when the entry is used (:meth:`_expand`)."""
        runs = self.bulk.get(0)
        if runs is None:
            runs = self.bulk[0] = {}
        run = runs.get(vpn >> 9)
        if run is None:
            run = runs[vpn >> 9] = BulkRun(el1, el0)
        elif run.el1 != el1 or run.el0 != el0:
            return False
        run.descs[vpn & 511] = desc
        return True

    def bulk_find(self, key: int) -> tuple[BulkRun, int] | None:
        """The run holding a bulk-filled entry for ``key``, and its descriptor."""
        runs = self.bulk.get(key >> ASID_SHIFT)
        run = None if runs is None else runs.get((key & VPN_MASK) >> 9)
        if run is None:
            return None
        desc: int = run.descs.item(key & 511)
        return (run, desc) if desc else None

    def bulk_peek(self, key: int) -> TlbEntry | None:
        """The bulk-filled entry cached for ``key``, left where it is (None: none)."""
        found = self.bulk_find(key)
        return None if found is None else self._expand(found[1], found[0])

    def bulk_take(self, key: int) -> TlbEntry | None:
        """The bulk-filled entry cached for ``key``, moved into the dicts (a lookup that
        hits it: from then on it is an ordinary entry); None if there is none."""
        found = self.bulk_find(key)
        if found is None:
            return None
        run, desc = found
        run.descs[key & 511] = 0
        e = self._expand(desc, run)
        tag = key >> ASID_SHIFT
        if tag:
            d = self.asids.get(tag)
            if d is None:
                d = self.asids[tag] = {}
            d[key] = e
        else:
            self.entries[key] = e
        return e

    def bulk_near(self, tag: int, lo: int, hi: int) -> bool:
        """A cheap, conservative look before :meth:`bulk_any`: False only when no bulk
        entry of ``tag`` can lie between page numbers ``lo`` and ``hi``."""
        runs = self.bulk.get(tag)
        if not runs:
            return False
        rlo, rhi = lo >> 9, hi >> 9
        return rhi - rlo > 8 or any(r in runs for r in range(rlo, rhi + 1))

    def bulk_any(self, tag: int, vpns: Any) -> bool:
        """Whether any page of ``vpns`` (page numbers, no tag, any order) is cached in the
        bulk tier under ``tag``; consecutive pages of one 2 MiB region are looked at
        together."""
        runs = self.bulk.get(tag)
        if not runs or not len(vpns):
            return False
        v = np.asarray(vpns, dtype=np.int64)
        r = v >> 9
        cuts = [0, *(np.flatnonzero(r[1:] != r[:-1]) + 1).tolist(), len(v)]
        for a, b in itertools.pairwise(cuts):
            run = runs.get(int(r[a]))
            if run is not None and run.descs[v[a:b] & 511].any():
                return True
        return False

    def bulk_fill(self, tag: int, vpns: Any, descs: Any, el1: int, el0: int) -> bool:
        """Cache level-3 page entries for ``vpns`` (distinct page numbers, no tag; none
        of them cached now: the caller looked) with descriptors ``descs`` (uint64) and
        the rights ``el1``/``el0``, under ``tag``. False, with nothing cached, when a
        region already holds bulk entries filled with other rights."""
        v = np.asarray(vpns, dtype=np.int64)
        regions = v >> 9
        runs = self.bulk.get(tag)
        if runs is None:
            runs = self.bulk[tag] = {}
        lo = int(regions[0])
        if bool((regions == lo).all()):  # one region (pages come in any order)
            groups = [(lo, slice(None))]
        else:
            cuts = [0, *(np.flatnonzero(regions[1:] != regions[:-1]) + 1).tolist(), len(v)]
            groups = [(int(regions[a]), slice(a, b)) for a, b in itertools.pairwise(cuts)]
        for r, _ in groups:
            run = runs.get(r)
            if run is not None and (run.el1 != el1 or run.el0 != el0):
                return False
        for r, part in groups:
            run = runs.get(r)
            if run is None:
                run = runs[r] = BulkRun(el1, el0)
            run.descs[v[part] & 511] = descs[part]
        return True

    def _bulk_drop(self, tag: int, lo: int, hi: int) -> None:
        """Drop the bulk entries of ``tag`` for page numbers [lo, hi)."""
        runs = self.bulk.get(tag)
        if not runs:
            return
        rlo, rhi = lo >> 9, (hi - 1) >> 9
        if len(runs) <= rhi - rlo + 1:
            regions = [r for r in runs if rlo <= r <= rhi]
        else:
            regions = [r for r in range(rlo, rhi + 1) if r in runs]
        for r in regions:
            a = max(lo - (r << 9), 0)
            b = min(hi - (r << 9), 512)
            if a == 0 and b == 512:
                del runs[r]
            else:
                runs[r].descs[a:b] = 0

    def cached(self) -> Iterator[tuple[int, int | None, TlbEntry]]:
        """(page VA, ASID or None for global/kernel, entry) for every cached page."""
        for key, entry in self.items():
            va, asid = page_va(key)
            yield va, asid, entry

    def insert(self, key: int, entry: TlbEntry, span_shift: int) -> None:
        if key > VPN_MASK:
            d = self.asids.get(key >> ASID_SHIFT)
            if d is None:
                d = self.asids[key >> ASID_SHIFT] = {}
            d[key] = entry
        else:
            self.entries[key] = entry
            if key < USER_VPN_END:
                self.user_global = True
        if span_shift > 12:
            self.spans.setdefault((span_shift, key >> (span_shift - 12)), set()).add(key)

    def insert_pages(self, items: list[tuple[int, TlbEntry]], tag: int | None = None) -> None:
        """Insert 4 KiB page entries (no span group), as one :meth:`insert` each.
        ``tag`` 0 says every key is global or kernel (no ASID), a positive ``tag`` that
        every key carries that ASID + 1: no need to look."""
        if not items:
            return
        if tag == 0:  # kernel-half pages only
            self.entries.update(items)
            return
        if tag is not None:
            self.asids.setdefault(tag, {}).update(items)
            return
        keys = [k for k, _ in items]
        lo, hi = min(keys), max(keys)
        if hi <= VPN_MASK:
            self.entries.update(items)
            if lo < USER_VPN_END:
                self.user_global = True
            return
        if lo > VPN_MASK and lo >> ASID_SHIFT == hi >> ASID_SHIFT:
            self.asids.setdefault(lo >> ASID_SHIFT, {}).update(items)
            return
        for key, entry in items:
            self.insert(key, entry, 12)

    def _pop(self, key: int) -> None:
        if key > VPN_MASK:
            d = self.asids.get(key >> ASID_SHIFT)
            if d is not None:
                d.pop(key, None)
        else:
            self.entries.pop(key, None)

    def _drop_key(self, key: int) -> None:
        self._pop(key)
        if not self.spans:
            return
        for shift in SPAN_SHIFTS:
            keys = self.spans.pop((shift, key >> (shift - 12)), None)
            if keys:
                for k in keys:
                    self._pop(k)

    def invalidate_va(self, va: int, asid: int | None, *, last_level: bool = False) -> None:
        """TLBI VAE1 (``asid`` given) or VAAE1 (all ASIDs) for the page holding ``va``;
        with ``last_level`` VALE1/VAALE1, which keep the walk cache."""
        vpn = va >> 12
        if self.walks and not last_level:
            self._drop_walks(va, va + 1, self._walk_tags(va, asid))
        self._drop_key(vpn)
        bulk = self.bulk
        if bulk:
            self._bulk_drop(0, vpn, vpn + 1)
        if va >= KERNEL_VA_START:
            return
        if asid is not None:
            self._drop_key(asid_tag(asid) | vpn)
            if bulk:
                self._bulk_drop(asid + 1, vpn, vpn + 1)
            return
        for tag in [t for t, d in self.asids.items() if d]:
            self._drop_key((tag << ASID_SHIFT) | vpn)
        for tag in [t for t in bulk if t]:
            self._bulk_drop(tag, vpn, vpn + 1)

    def invalidate_range(
        self, start: int, end: int, asid: int | None, *, last_level: bool = False
    ) -> None:
        """Invalidate every page in [start, end): exactly what :meth:`invalidate_va` of
        each page does, done per dict (the cached keys in range, found by scanning
        whichever is smaller: the dict or the range) and per span group overlapping it."""
        lo, hi = start >> 12, (end + 0xFFF) >> 12
        if hi <= lo:
            return
        user = end <= USER_VA_END
        if not user and start < KERNEL_VA_START:  # straddles a half: page by page
            for va in range(start & ~0xFFF, end, 0x1000):
                self.invalidate_va(va, asid, last_level=last_level)
            return
        if self.walks and not last_level:
            self._drop_walks(lo << 12, hi << 12, self._walk_tags(start, asid))
        tags: list[int] = [0]
        if user:
            if asid is not None:
                tags.append(asid + 1)
            else:
                tags.extend(t for t, d in self.asids.items() if d)
                tags.extend(t for t in self.bulk if t and t not in tags)
        for tag in tags:
            if self.bulk:
                self._bulk_drop(tag, lo, hi)
            d = self.entries if tag == 0 else self.asids.get(tag)
            klo, khi = (tag << ASID_SHIFT) | lo, (tag << ASID_SHIFT) | hi
            if d:
                if len(d) <= hi - lo:
                    victims = [k for k in d if klo <= k < khi]
                else:
                    victims = [k for k in range(klo, khi) if k in d]
                for k in victims:
                    del d[k]
            if self.spans:
                self._drop_spans(klo, khi)

    def _drop_spans(self, klo: int, khi: int) -> None:
        """Drop every span group indexed by a key in [klo, khi) (with its pages)."""
        spans = self.spans
        for shift in SPAN_SHIFTS:
            s = shift - 12
            for idx in range(klo >> s, ((khi - 1) >> s) + 1):
                keys = spans.pop((shift, idx), None)
                if keys:
                    for k in keys:
                        self._pop(k)

    def invalidate_asid(self, asid: int) -> None:
        """TLBI ASIDE1: every non-global entry tagged with ``asid``."""
        tag = asid + 1
        self.walks.pop(tag, None)
        self.bulk.pop(tag, None)
        d = self.asids.pop(tag, None)
        if not d or not self.spans:
            return
        spans = self.spans
        # a span group's keys share its tag, so they all went with the dict
        for sk in [sk for sk in spans if sk[1] >> (ASID_SHIFT - sk[0] + 12) == tag]:
            del spans[sk]

    def invalidate_all(self) -> None:
        """TLBI VMALLE1."""
        self.entries.clear()
        self.asids.clear()
        self.bulk.clear()
        self.spans.clear()
        self.walks.clear()
