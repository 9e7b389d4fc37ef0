"""A simulated arm64 CPU: system registers, a TLB, and the load/store access API.

Models what kpsim needs of an Armv8.9/v9.4 PE with FEAT_S1POE: POR_EL1 and POR_EL0
(a write takes effect for later accesses only after a context synchronisation
event: an ISB, exception entry or exception return), TCR2_EL1.POE/E0POE, TTBR0/1 with
an ASID, and data accesses at EL1 or EL0 checked against base and overlay
permissions. Faults are :class:`~kpsim.hw.arm64.fault.Fault` values; the access API
raises them as :class:`~kpsim.errors.AccessFault`.

Left out: PSTATE.PAN and unprivileged loads/stores (LDTR/STTR), WXN, alignment
faults, instruction execution (``fetch`` checks execute permission only).
"""

from __future__ import annotations

from itertools import chain, compress, filterfalse, pairwise, repeat
from operator import itemgetter, not_
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

import numpy as np

from kpsim.errors import AccessFault, KpsimError
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.frame_arena import ARENA
from kpsim.hw.arm64.mmu import (
    KERNEL_VA_START,
    USER_VA_END,
    LeafEntry,
    leaf_perms,
    walk_entry,
    walk_leaf,
    walk_to_pte_table,
    walk_vpn_wc,
)
from kpsim.hw.arm64.por import overlay_table
from kpsim.hw.arm64.tlb import ASID_SHIFT, VPN_MASK, Tlb, TlbEntry
from kpsim.hw.physmem import PhysicalMemory

if TYPE_CHECKING:
    from kpsim.hw.arm64.system import Arm64System

R, X, W = 1, 2, 4
_NO_OVERLAY: Final = (7,) * 8
_FAULT_NAMES: Final[dict[int, str]] = {int(k): k.name.lower() for k in FaultKind}
_TRANSLATION_L0: Final = int(FaultKind.TRANSLATION)
_OVERLAYS: Final[dict[int, tuple[int, ...]]] = {}
_ARENA: Final = ARENA
_ALL: Final = slice(None)
_SHR12: Final = (12).__rrshift__  # va >> 12, as a C-level callable for map()
_FIRST: Final = itemgetter(0)
_DESC: Final = itemgetter(5)  # host storage for frames made many at a time
_NOT_OA: Final = np.uint64(~d.OA_MASK & ((1 << 64) - 1))


def _vpn_array(vas: list[int]) -> Any:
    """The page numbers of ``vas`` (any half of the address space) as int64."""
    return (np.asarray(vas, dtype=np.uint64) >> np.uint64(12)).astype(np.int64)


def _disjoint(d: dict[int, Any], klo: int, khi: int, vas: list[int], tag: int) -> bool:
    """Whether none of the keys ``tag | va >> 12`` (``vas`` ascending, so the keys lie
    in [klo, khi]) is in ``d``: by looking the keys up, or, when ``d`` is the smaller,
    by scanning it for keys in range first."""
    if len(d) >= len(vas):
        return d.keys().isdisjoint(map(tag.__or__, map(_SHR12, vas)))
    near = [k for k in d if klo <= k <= khi]
    return not near or set(map(tag.__or__, map(_SHR12, vas))).isdisjoint(near)


def overlay_of(por: int) -> tuple[int, ...]:
    """:func:`overlay_table` of ``por``, computed once per register value."""
    t = _OVERLAYS.get(por)
    if t is None:
        if len(_OVERLAYS) > 4096:
            _OVERLAYS.clear()
        t = _OVERLAYS[por] = overlay_table(por)
    return t


class _UniformRun(NamedTuple):
    """Walked level-3 leaves of one shape, as :meth:`Cpu.probe_el1_stores` finds them
    in the usual batch: descriptors and page numbers (arrays) and the rights."""

    descs: Any
    vpns: Any
    el1: int
    el0: int

    def columns(self, n: int) -> tuple[list[int], ...]:
        """The first ``n`` leaves as :meth:`Cpu._walk_run`'s six columns."""
        descs = self.descs[:n]
        pas = descs & np.uint64(d.OA_MASK)
        return (descs.tolist(), [self.el1] * n, [self.el0] * n,
                ((descs >> np.uint64(60)) & np.uint64(7)).tolist(), pas.tolist(),
                (pas >> np.uint64(12)).tolist())  # fmt: skip


class Undefined(KpsimError):
    """An UNDEFINED instruction: e.g. an MSR to POR_EL1 on a CPU without POE."""


class Cpu:
    """One processing element. Hot counters are plain int attributes."""

    __slots__ = (
        "_fresh",
        "_ov0",
        "_ov1",
        "asid",
        "cpu_id",
        "faults",
        "isbs",
        "loads",
        "mem",
        "poe",
        "por_el0",
        "por_el1",
        "por_writes",
        "stores",
        "system",
        "tcr2_e0poe",
        "tcr2_poe",
        "tlb",
        "tlb_hits",
        "tlb_misses",
        "ttbr0",
        "ttbr1",
        "walks",
    )

    def __init__(self, cpu_id: int, system: Arm64System, *, poe: bool = True) -> None:
        self.cpu_id = cpu_id
        self.system = system
        self.mem: PhysicalMemory = system.mem
        self.poe = poe
        self.por_el1 = 0
        self.por_el0 = 0
        self.tcr2_poe = False
        self.tcr2_e0poe = False
        self._ov1: tuple[int, ...] = _NO_OVERLAY
        self._ov0: tuple[int, ...] = _NO_OVERLAY
        self.ttbr0: int | None = None
        self.ttbr1: int | None = None
        self.asid = 0
        self.tlb = Tlb()
        self.tlb.mem = self.mem
        self.tlb_hits = self.tlb_misses = self.walks = 0
        self.loads = self.stores = self.por_writes = self.isbs = 0
        self.faults: dict[str, int] = {}
        #: frames made zeroed by the last commit_el1_zero_pages: pfn -> row of a block
        self._fresh: tuple[list[int], Any] | None = None

    # -- system registers ------------------------------------------------------
    def write_por_el1(self, value: int) -> None:
        """MSR POR_EL1: the new value governs accesses only after the next ISB."""
        if not self.poe:
            raise Undefined(f"cpu{self.cpu_id}: MSR POR_EL1 without FEAT_S1POE")
        self.por_el1 = value
        self.por_writes += 1

    def write_por_el0(self, value: int) -> None:
        if not self.poe:
            raise Undefined(f"cpu{self.cpu_id}: MSR POR_EL0 without FEAT_S1POE")
        self.por_el0 = value
        self.por_writes += 1

    def set_tcr2(self, *, poe: bool, e0poe: bool) -> None:
        if (poe or e0poe) and not self.poe:
            raise Undefined(f"cpu{self.cpu_id}: TCR2_EL1.POE without FEAT_S1POE")
        self.tcr2_poe, self.tcr2_e0poe = poe, e0poe

    def isb(self) -> None:
        """Instruction synchronisation barrier: register writes take effect."""
        self.isbs += 1
        self.context_sync()

    def context_sync(self) -> None:
        """A context-synchronisation event (ISB, exception entry, ERET)."""
        ovs = _OVERLAYS  # overlay_of(), its cache looked up inline (a miss calls it)
        p1, p0 = self.por_el1, self.por_el0
        self._ov1 = (ovs.get(p1) or overlay_of(p1)) if self.tcr2_poe else _NO_OVERLAY
        self._ov0 = (ovs.get(p0) or overlay_of(p0)) if self.tcr2_e0poe else _NO_OVERLAY

    @property
    def por_el1_in_effect(self) -> tuple[int, ...]:
        return self._ov1

    @property
    def por_el0_in_effect_el0(self) -> tuple[int, ...]:
        """The per-POIndex rights POR_EL0 grants EL0 accesses now (after the last sync)."""
        return self._ov0

    def switch_ttbr0(self, table_pa: int | None, asid: int) -> None:
        """Install a user address space (TTBR0_EL1 with its ASID)."""
        self.ttbr0 = table_pa
        self.asid = asid

    # -- translation -------------------------------------------------------------
    def translate(self, va: int, *, el: int = 1, write: bool = False) -> TlbEntry | Fault:
        """Look ``va`` up in the TLB, walking and filling on a miss."""
        if va < USER_VA_END:  # (a user VA is word-sized; KERNEL_VA_START is not)
            key = ((self.asid + 1) << ASID_SHIFT) | (va >> 12)
            d = self.tlb.asids.get(self.asid + 1)
            e = None if d is None else d.get(key)
        else:  # the kernel half (a non-canonical VA's key matches nothing, and faults)
            key = va >> 12
            e = self.tlb.entries.get(key)
        if e is not None:
            self.tlb_hits += 1
            return e
        return self._fill(va, key, el, write)

    def _fill(self, va: int, key: int, el: int, write: bool) -> TlbEntry | Fault:
        e = self._fill_code(va, key)
        if isinstance(e, int):
            return Fault(va, FaultKind(e & ~3), e & 3, write=write, el=el)
        return e

    def _fill_code(self, va: int, key: int) -> TlbEntry | int:
        """A TLB miss: the filled entry, or the fault status code (kind + level)."""
        if self.tlb.bulk:  # not a miss after all: an entry a batch filled in bulk
            b = self.tlb.bulk_take(key)
            if b is not None:
                self.tlb_hits += 1
                return b
        vpn = key & VPN_MASK  # va >> 12
        if va < USER_VA_END:
            e = self.tlb.entries.get(vpn)  # a global entry in the user half
            if e is not None:
                self.tlb_hits += 1
                return e
            table = self.ttbr0
        elif va >= KERNEL_VA_START:
            table = self.ttbr1
        else:
            table = None
        self.tlb_misses += 1
        if table is None:
            return _TRANSLATION_L0
        self.walks += 1
        tag = self.asid + 1 if va < USER_VA_END else 0  # the walk cache's ASID tag
        t = walk_vpn_wc(self.mem, table, vpn, self.tlb.walks, tag)
        if isinstance(t, int):
            return t
        return self._insert(va, t, key)

    def _insert(self, va: int, t: LeafEntry, key: int) -> TlbEntry:
        desc = t[5]
        if not desc & d.NG and key >= (1 << ASID_SHIFT) and va < USER_VA_END:
            key = va >> 12
        page_pa = t[0]
        mem = self.mem
        frame = mem.frames.get(page_pa >> 12)
        if frame is None:  # PhysicalMemory.frame, with host storage from the arena
            if not mem.base <= page_pa < mem.end:
                mem.check(page_pa)  # raises ExternalAbort
            frame = mem.frames[page_pa >> 12] = _ARENA.take_one()
        entry: TlbEntry = (t[0], t[1], t[2], t[3], t[4], desc, frame)
        if t[4] == 3 and not desc & d.CONT:  # a 4 KiB page: Tlb.insert without a span
            if key > VPN_MASK:
                tlb = self.tlb.asids.get(key >> ASID_SHIFT)
                if tlb is None:
                    tlb = self.tlb.asids[key >> ASID_SHIFT] = {}
                tlb[key] = entry
            else:
                self.tlb.entries[key] = entry
                if va < USER_VA_END:
                    self.tlb.user_global = True
            return entry
        shift = d.LEVEL_SHIFT[t[4]]
        if desc & d.CONT:
            shift += 4
        self.tlb.insert(key, entry, shift)
        return entry

    def _check(self, va: int, e: TlbEntry, el: int, need: int, write: bool) -> Fault | None:
        base = e[1] if el == 1 else e[2]
        allowed = base & (self._ov1 if el == 1 else self._ov0)[e[3]]
        if allowed & need:
            return None
        return Fault(
            va,
            FaultKind.PERMISSION,
            e[4],
            write=write,
            exec=need == X,
            el=el,
            overlay=bool(base & need),
        )

    def _raise(self, f: Fault) -> AccessFault:
        self._count_fault(f)
        return AccessFault(f)

    def _count_fault(self, f: Fault) -> None:
        name = "overlay" if f.overlay else _FAULT_NAMES[int(f.kind)]
        self.faults[name] = self.faults.get(name, 0) + 1

    # -- the access API ------------------------------------------------------------
    def store(self, va: int, value: int, size: int = 8, el: int = 1) -> None:
        """Store ``size`` bytes (1, 2, 4, 8) little-endian at ``va``; raise AccessFault."""
        if va < USER_VA_END:  # (a user VA is word-sized; KERNEL_VA_START is not)
            key = ((self.asid + 1) << ASID_SHIFT) | (va >> 12)
            d = self.tlb.asids.get(self.asid + 1)
            hit = None if d is None else d.get(key)
        else:  # the kernel half (a non-canonical VA's key matches nothing, and faults)
            key = va >> 12
            hit = self.tlb.entries.get(key)
        if hit is None:
            filled = self._fill(va, key, el, True)
            if isinstance(filled, Fault):
                raise self._raise(filled)
            e = filled
        else:
            self.tlb_hits += 1
            e = hit
        if not (e[1] if el == 1 else e[2]) & (self._ov1 if el == 1 else self._ov0)[e[3]] & W:
            raise self._raise(self._check(va, e, el, W, True))  # type: ignore[arg-type]
        self.stores += 1
        if size == 8:
            e[6][(va & 0xFFF) >> 3] = value
        else:
            self.mem.write(e[0] | (va & 0xFFF), value, size)

    def store_with_por_el1(self, va: int, value: int, por: int) -> None:
        """``MSR POR_EL1, por; ISB; STR value, [va]; MSR POR_EL1, prev; ISB`` (the
        restore is skipped when ``prev`` is 0, kpkeys' "nothing to restore"): a guarded
        64-bit EL1 store, with the same register writes, ISBs, checks and counters as
        :meth:`write_por_el1`, :meth:`isb` and :meth:`store` in that order."""
        if not self.poe:
            raise Undefined(f"cpu{self.cpu_id}: MSR POR_EL1 without FEAT_S1POE")
        prev = self.por_el1
        ovs = _OVERLAYS  # overlay_of(), its cache looked up inline (a miss calls it)
        por0 = self.por_el0
        ov0 = (ovs.get(por0) or overlay_of(por0)) if self.tcr2_e0poe else _NO_OVERLAY
        self.por_el1 = por
        self._ov1 = (ovs.get(por) or overlay_of(por)) if self.tcr2_poe else _NO_OVERLAY
        self._ov0 = ov0
        self.por_writes += 1
        self.isbs += 1
        try:
            if va >= KERNEL_VA_START:
                e = self.tlb.entries.get(va >> 12)
                if e is not None and e[1] & self._ov1[e[3]] & W:
                    self.tlb_hits += 1
                    self.stores += 1
                    e[6][(va & 0xFFF) >> 3] = value
                    return
            self.store(va, value)
        finally:
            if prev != 0:
                self.por_el1 = prev
                if self.tcr2_poe:
                    self._ov1 = ovs.get(prev) or overlay_of(prev)
                else:
                    self._ov1 = _NO_OVERLAY
                self._ov0 = ov0
                self.por_writes += 1
                self.isbs += 1

    def load(self, va: int, size: int = 8, el: int = 1) -> int:
        """Load ``size`` bytes little-endian from ``va``; raise AccessFault."""
        e = self.translate(va, el=el)
        if isinstance(e, Fault):
            raise self._raise(e)
        f = self._check(va, e, el, R, False)
        if f is not None:
            raise self._raise(f)
        self.loads += 1
        if size == 8:
            return int(e[6][(va & 0xFFF) >> 3])
        return self.mem.read(e[0] | (va & 0xFFF), size)

    def try_store(self, va: int, value: int, size: int = 8, el: int = 1) -> Fault | None:
        """Like :meth:`store` but return the fault as a value."""
        try:
            self.store(va, value, size, el)
        except AccessFault as exc:
            return exc.fault  # type: ignore[no-any-return]
        return None

    def access_el0(self, va: int, write: bool, value: int = 0) -> bool:
        """A one-byte EL0 store (``write``) or load; False if it faulted.

        The same translation, checks and counters as :meth:`store`/:meth:`load` with
        ``size=1, el=0``, the fault counted but returned as False instead of raised.
        """
        if va < USER_VA_END:  # (a user VA is word-sized; KERNEL_VA_START is not)
            key = ((self.asid + 1) << ASID_SHIFT) | (va >> 12)
            d = self.tlb.asids.get(self.asid + 1)
            e = None if d is None else d.get(key)
        else:  # the kernel half (a non-canonical VA's key matches nothing, and faults)
            key = va >> 12
            e = self.tlb.entries.get(key)
        if e is None:
            filled = self._fill_code(va, key)
            if isinstance(filled, int):
                name = _FAULT_NAMES[filled & ~3]
                self.faults[name] = self.faults.get(name, 0) + 1
                return False
            e = filled
        else:
            self.tlb_hits += 1
        need = W if write else R
        if not e[2] & self._ov0[e[3]] & need:
            self._count_fault(self._check(va, e, 0, need, write))  # type: ignore[arg-type]
            return False
        if write:
            self.stores += 1
            f = e[6]
            i = (va & 0xFFF) >> 3
            sh = (va & 7) << 3
            f[i] = (f.item(i) & ~(0xFF << sh)) | ((value & 0xFF) << sh)
        else:
            self.loads += 1
        return True

    def fetch(self, va: int, el: int = 1) -> None:
        """Check an instruction fetch at ``va`` (execute permission)."""
        e = self.translate(va, el=el)
        if isinstance(e, Fault):
            raise self._raise(Fault(va, e.kind, e.level, exec=True, el=el))
        f = self._check(va, e, el, X, False)
        if f is not None:
            raise self._raise(f)

    def store_table(self, table_va: int, index: object, values: object) -> int:
        """Store a batch of 64-bit entries into the 4 KiB page at ``table_va`` (EL1).

        ``index`` and ``values`` are numpy-compatible (an int, a slice or arrays of
        word indices). The page is translated and its write permission checked once,
        as the first store of the batch would; the count of stores is returned.
        """
        e = self.translate(table_va, el=1, write=True)
        if isinstance(e, Fault):
            raise self._raise(e)
        if not e[1] & self._ov1[e[3]] & W:  # _check, inlined
            raise self._raise(self._check(table_va, e, 1, W, True))  # type: ignore[arg-type]
        frame = e[6]
        frame[index] = values
        if index.__class__ is slice and index == _ALL:
            n = 512
        elif isinstance(index, int):
            n = 1
        elif isinstance(index, slice):
            n = len(range(*index.indices(512)))
        else:
            n = len(index)  # type: ignore[arg-type]
        self.stores += n
        return n

    def zero_page(self, va: int) -> None:
        """``store_table(va, slice(None), 0)`` (``clear_page``: 512 stores, one check);
        a kernel page is :meth:`zero_kernel_page` of its page number."""
        if va < KERNEL_VA_START:
            self.store_table(va, slice(None), 0)
            return
        self.zero_kernel_page(va >> 12)

    def zero_kernel_page(self, vpn: int) -> None:
        """:meth:`zero_page` of the kernel page ``vpn`` (its VA >> 12: a word-sized int
        where the VA is a multi-word one in compiled code).

        A kernel page that misses is filed in the TLB's bulk tier (:meth:`Tlb.bulk_put`,
        no frame) and a bulk entry that hits stays there: a frame never written is not
        made (it reads zero), one that holds data is zeroed in place."""
        tlb = self.tlb
        e = tlb.entries.get(vpn)
        if e is None:
            found = tlb.bulk_find(vpn) if tlb.bulk else None
            if found is None:
                if self.ttbr1 is not None:
                    self._zero_miss(vpn, self.ttbr1)
                    return
            elif found[0].el1 & self._ov1[(found[1] >> 60) & 7] & W:  # a bulk hit
                self.tlb_hits += 1
                self.mem.zero_frame((found[1] & d.OA_MASK) >> 12)
                self.stores += 512
                return
            self._zero_slow(vpn << 12)  # no TTBR1, or a bulk entry that denies the store
            return
        self.tlb_hits += 1
        if not e[1] & self._ov1[e[3]] & W:
            raise self._raise(self._check(vpn << 12, e, 1, W, True))  # type: ignore[arg-type]
        e[6][:] = 0
        self.stores += 512

    def _zero_miss(self, vpn: int, table: int) -> None:
        """:meth:`zero_page` of a kernel page no TLB tier caches: walk, fill, check, zero."""
        self.tlb_misses += 1
        self.walks += 1
        t = walk_vpn_wc(self.mem, table, vpn, self.tlb.walks, 0)
        if isinstance(t, int):
            raise self._raise(Fault(vpn << 12, FaultKind(t & ~3), t & 3, write=True, el=1))
        pa = t[0]
        mem = self.mem
        if t[4] != 3 or t[5] & d.CONT or not mem.base <= pa < mem.end:
            self._zero_fill(vpn << 12, t, vpn)  # a span group, or an abort: the dict path
            return
        if not self.tlb.bulk_put(vpn, t[5], t[1], t[2]):  # the region has other rights
            self._zero_fill(vpn << 12, t, vpn)
            return
        if not t[1] & self._ov1[t[3]] & W:  # _check of the walked leaf
            overlay = bool(t[1] & W)
            va = vpn << 12
            raise self._raise(Fault(va, FaultKind.PERMISSION, 3, write=True, el=1, overlay=overlay))
        mem.zero_frame(pa >> 12)
        self.stores += 512

    def _zero_fill(self, va: int, t: LeafEntry, vpn: int) -> None:
        """:meth:`zero_page` through a dict entry filled from the walk ``t``."""
        frames = self.mem.frames
        made = len(frames)
        e = self._insert(va, t, vpn)
        if not e[1] & self._ov1[e[3]] & W:
            raise self._raise(self._check(va, e, 1, W, True))  # type: ignore[arg-type]
        if len(frames) == made:  # else the fill just made the frame: a zeroed arena row
            e[6][:] = 0
        self.stores += 512

    def _zero_slow(self, va: int) -> None:
        """:meth:`zero_page` through :meth:`_fill_code` (the general miss)."""
        frames = self.mem.frames
        made = len(frames)
        filled = self._fill_code(va, va >> 12)
        if isinstance(filled, int):
            raise self._raise(Fault(va, FaultKind(filled & ~3), filled & 3, write=True, el=1))
        e = filled
        if not e[1] & self._ov1[e[3]] & W:
            raise self._raise(self._check(va, e, 1, W, True))  # type: ignore[arg-type]
        if len(frames) == made:  # else the fill just made the frame: a zeroed arena row
            e[6][:] = 0
        self.stores += 512

    # -- batched forms: the TLB state and counters of the same one-by-one accesses ------
    # Per-page work runs through C-level zip/map/numpy where it can (no Python loop per
    # page on the common paths); the results are those of the page-by-page forms.
    def probe_el0(self, vas: list[int]) -> list[TlbEntry | None] | None:
        """The TLB entry each user page's next EL0 access would hit (None: a miss), or
        None when every one misses. ``vas``: ascending user addresses.

        Looks only: nothing is counted or filled (see :meth:`commit_el0`)."""
        tlb = self.tlb
        d = tlb.asids.get(self.asid + 1)
        g = tlb.entries
        tag = (self.asid + 1) << ASID_SHIFT
        vpns: list[int] | None = None
        bulk = False
        if tlb.bulk_near(self.asid + 1, vas[0] >> 12, vas[-1] >> 12):
            vpns = list(map(_SHR12, vas))
            bulk = tlb.bulk_any(self.asid + 1, vpns)
        if (
            not bulk
            and (d is None or _disjoint(d, tag | (vas[0] >> 12), tag | (vas[-1] >> 12), vas, tag))
            and (not tlb.user_global or g.keys().isdisjoint(map(_SHR12, vas)))
        ):
            return None  # every page misses (the usual batch), found without a list
        if vpns is None:
            vpns = list(map(_SHR12, vas))
        hits: list[TlbEntry | None]
        hits = [None] * len(vpns) if d is None else list(map(d.get, map(tag.__or__, vpns)))
        if bulk:  # as the dicts would answer if the bulk entries were in them
            hits = [
                h if h is not None else tlb.bulk_peek(tag | v)
                for h, v in zip(hits, vpns, strict=True)
            ]
        if None in hits:  # a global entry in the user half answers where no ASID one does
            if hits.count(None) == len(hits):
                return list(map(g.get, vpns))
            hits = [h if h is not None else g.get(v) for h, v in zip(hits, vpns, strict=True)]
        return hits

    def leaf_entries(self, descs: Any, strip: int) -> list[LeafEntry | None]:
        """Level-3 descriptors as :func:`walk_entry` would return them under the table
        bits ``strip`` (None where the walk would fault, and for contiguous-hint leaves,
        whose TLB fill also makes a span group: those go one at a time)."""
        a = np.asarray(descs, dtype=np.uint64)
        n = len(a)
        if n == 1:  # one descriptor (a batch's PTE template): the scalar evaluation
            e = walk_leaf(int(a[0]), strip)
            return [None if e is None or e[5] & d.CONT else e]
        if n > 1:
            attrs = a & _NOT_OA
            if bool((attrs == attrs[0]).all()):  # one attribute set (e.g. fresh PTEs): one leaf
                e = walk_leaf(int(a[0]), strip)
                if e is None or e[5] & d.CONT:
                    return [None] * n
                return list(
                    zip(
                        (a & np.uint64(d.OA_MASK)).tolist(),
                        repeat(e[1], n),
                        repeat(e[2], n),
                        repeat(e[3], n),
                        repeat(3, n),
                        a.tolist(),
                        strict=True,
                    )
                )
        ok, el1, el0 = leaf_perms(a, strip)
        ok &= (a & np.uint64(d.CONT)) == 0
        if n and bool(ok.all()):  # every one a page leaf: the tuples made by zip, in C
            po = ((a >> np.uint64(60)) & np.uint64(7)).tolist()
            pas = (a & np.uint64(d.OA_MASK)).tolist()
            return list(
                zip(pas, el1.tolist(), el0.tolist(), po, repeat(3, n), a.tolist(), strict=True)
            )
        out: list[LeafEntry | None] = [None] * n
        good = np.flatnonzero(ok)
        if not good.size:
            return out
        vals = a[good].tolist()
        oa = d.OA_MASK
        for i, v, p1, p0 in zip(
            good.tolist(), vals, el1[good].tolist(), el0[good].tolist(), strict=True
        ):
            out[i] = (v & oa, p1, p0, (v >> 60) & 7, 3, v)
        return out

    def walk_pages(self, table_pa: int, vas: list[int]) -> list[LeafEntry | int]:
        """:func:`walk_entry` for many page-aligned VAs: one walk to the level-3 table per
        run of VAs in the same 2 MiB, the leaves read as one array."""
        out: list[LeafEntry | int] = []
        mem, i, n = self.mem, 0, len(vas)
        while i < n:
            region = vas[i] >> 21
            j = i + 1
            while j < n and vas[j] >> 21 == region:
                j += 1
            path = walk_to_pte_table(mem, table_pa, vas[i]) if j - i > 2 else None
            if path is None:
                out.extend(walk_entry(mem, table_pa, va) for va in vas[i:j])
            else:
                frame = mem.frame_ro(path[0] >> 12)
                descs = frame[[(va >> 12) & 0x1FF for va in vas[i:j]]]
                for va, e in zip(vas[i:j], self.leaf_entries(descs, path[1]), strict=True):
                    out.append(walk_entry(mem, table_pa, va) if e is None else e)
            i = j
        return out

    def probe_el1_stores(self, vas: list[int]) -> tuple[int, Any]:
        """For EL1 stores to the pages ``vas`` in order: how many in a row would succeed
        (translation and write permission), and what :meth:`commit_el1_zero_pages` needs
        (the TLB entry each would use: a hit, or the one its walk would fill, with its
        frame made ready). Changes no architectural state and counts nothing."""
        g = self.tlb.entries
        if not vas or self.ttbr1 is None:
            return 0, ([], [], [])
        v = np.asarray(vas, dtype=np.uint64)
        if int(v.min()) < KERNEL_VA_START:
            return 0, ([], [], [])
        ov = self._ov1
        ov_arr = np.array(ov, dtype=np.int64)
        n = len(vas)
        r = v >> np.uint64(21)
        cuts = [0, *(np.flatnonzero(r[1:] != r[:-1]) + 1).tolist(), n]
        vpns = (v >> np.uint64(12)).astype(np.int64)
        bulk = self.tlb.bulk_any(0, vpns)  # a page cached in the bulk tier: a hit
        if not bulk and g.keys().isdisjoint(vpns.tolist()):
            # all misses (the usual batch): runs end only where the 2 MiB region changes;
            # the entries are made by the commit, straight into the TLB
            uniform = self._walk_uniform(vas, cuts, ov_arr)
            if uniform is not None:
                descs, leaf = uniform
                k = len(descs)
                got = ((descs & np.uint64(d.OA_MASK)) >> np.uint64(12)).tolist()
                self._frames_for(got)
                return k, (_UniformRun(descs, vpns[:k], leaf[1], leaf[2]), None, got)
            i = 0
            cols: tuple[list[int], ...] = ([], [], [], [], [], [])
            for j in cuts[1:]:
                run = self._walk_run(vas[i:j], ov_arr)
                for col, part in zip(cols, run, strict=True):
                    col.extend(part)
                if len(run[0]) < j - i:
                    break
                i = j
            self._frames_for(cols[5])
            return len(cols[0]), (cols, None, cols[5])
        hits = list(map(g.get, map(_SHR12, vas)))
        if bulk:  # as the dict would answer if the bulk entries were in it
            peek = self.tlb.bulk_peek
            hits = [h if h is not None else peek(va >> 12) for h, va in zip(hits, vas, strict=True)]
        segs: list[Any] = []  # a hit entry, or the columns of a run of walked leaves
        self._probe_mixed(vas, hits, ov, ov_arr, segs)
        runs = [c for c in segs if len(c) == 6]
        self._frames_for(list(chain.from_iterable(c[5] for c in runs)))
        frames = self.mem.frames
        items: list[Any] = []
        walked: list[bool] = []
        pfns: list[int] = []
        for c in segs:
            if len(c) != 6:
                items.append(c)
                walked.append(False)
                pfns.append(c[0] >> 12)
                continue
            items.extend(
                zip(c[4], c[1], c[2], c[3], repeat(3), c[0], map(frames.__getitem__, c[5]))
            )
            walked.extend(repeat(True, len(c[0])))
            pfns.extend(c[5])
        return len(items), (items, walked, pfns)

    def _probe_mixed(
        self, vas: list[int], hits: list[Any], ov: tuple[int, ...], ov_arr: Any, segs: list[Any]
    ) -> None:
        """:meth:`probe_el1_stores` where some pages hit: page by page, runs of misses in
        one 2 MiB region walked together."""
        i, n = 0, len(vas)
        while i < n:
            e = hits[i]
            if e is not None:
                if not e[1] & ov[e[3]] & W:
                    break
                segs.append(e)
                i += 1
                continue
            region = vas[i] >> 21
            j = i + 1
            while j < n and hits[j] is None and vas[j] >> 21 == region:
                j += 1
            cols = self._walk_run(vas[i:j], ov_arr)
            segs.append(cols)
            if len(cols[0]) < j - i:
                break
            i = j

    def _walk_uniform(self, vas: list[int], cuts: list[int], ov_arr: Any) -> Any:
        """:meth:`_walk_run` of each 2 MiB group ``vas[cuts[i]:cuts[i + 1]]`` when every
        group is a run of level-3 page leaves with one attribute set and the same
        rights: (the leading descriptors up to the first that would fault, as one
        uint64 array; the leaf of the first), or None for any other shape (the caller
        takes the general path)."""
        if self.ttbr1 is None:
            return None
        parts: list[Any] = []
        first: LeafEntry | None = None
        for a, b in pairwise(cuts):
            path = walk_to_pte_table(self.mem, self.ttbr1, vas[a])
            if path is None:
                return None
            index = (
                (np.asarray(vas[a:b], dtype=np.uint64) >> np.uint64(12)) & np.uint64(0x1FF)
            ).astype(np.intp)
            descs = self.mem.frame_ro(path[0] >> 12)[index]
            attrs = descs & _NOT_OA
            if not bool((attrs == attrs[0]).all()):
                return None
            leaf = walk_leaf(int(descs[0]), path[1])
            if leaf is None or leaf[5] & d.CONT:
                return None
            if first is None:
                first = leaf
            elif leaf[1:4] != first[1:4]:
                return None
            if not leaf[1] & int(ov_arr[leaf[3]]) & W:
                break  # the walk of the group's first page would fault: the run ends
            parts.append(descs)
        if first is None:
            return None
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        return out, first

    def _walk_run(self, vas: list[int], ov_arr: Any) -> tuple[list[int], ...]:
        """The leading leaves, for EL1 writes at POR_EL1 ``ov_arr``, of kernel pages
        ``vas`` in one 2 MiB region, up to the first whose walk or check would fault:
        level-3 descriptors, EL1 and EL0 rights, POIndex, page address and pfn, as six
        lists."""
        path = walk_to_pte_table(self.mem, self.ttbr1, vas[0]) if self.ttbr1 is not None else None
        oa = d.OA_MASK
        if path is None:  # not a table at every level (a block): page by page
            out: list[LeafEntry] = []
            for va in vas:
                e = walk_entry(self.mem, self.ttbr1, va) if self.ttbr1 is not None else 0
                if isinstance(e, int) or e[4] != 3 or e[5] & d.CONT or not e[1] & ov_arr[e[3]] & W:
                    break  # blocks and contiguous runs have TLB span groups: page by page
                out.append(e)
            return ([e[5] for e in out], [e[1] for e in out], [e[2] for e in out],
                    [e[3] for e in out], [e[5] & oa for e in out],
                    [(e[5] & oa) >> 12 for e in out])  # fmt: skip
        index = ((np.asarray(vas, dtype=np.uint64) >> np.uint64(12)) & np.uint64(0x1FF)).astype(
            np.intp
        )
        descs = self.mem.frame_ro(path[0] >> 12)[index]
        attrs = descs & _NOT_OA
        if bool((attrs == attrs[0]).all()):  # one attribute set: evaluated once
            leaf = walk_leaf(int(descs[0]), path[1])
            if leaf is None or leaf[5] & d.CONT or not leaf[1] & int(ov_arr[leaf[3]]) & W:
                return ([], [], [], [], [], [])
            k = len(vas)
            pas = descs & np.uint64(oa)
            return (descs.tolist(), [leaf[1]] * k, [leaf[2]] * k, [leaf[3]] * k, pas.tolist(),
                    (pas >> np.uint64(12)).tolist())  # fmt: skip
        ok, el1, el0 = leaf_perms(descs, path[1])
        po = (descs >> np.uint64(60)).astype(np.int64) & 7
        allowed = ok & ((el1 & ov_arr[po] & W) != 0) & ((descs & np.uint64(d.CONT)) == 0)
        k = len(vas) if bool(allowed.all()) else int(np.argmin(allowed))
        pas = descs[:k] & np.uint64(oa)
        return (descs[:k].tolist(), el1[:k].tolist(), el0[:k].tolist(), po[:k].tolist(),
                pas.tolist(), (pas >> np.uint64(12)).tolist())  # fmt: skip

    def _frames_for(self, pfns: list[int]) -> None:
        """Make the frames of ``pfns`` that do not exist yet, as rows of one zeroed
        block (remembered in ``_fresh`` so the next byte stores to them go at once)."""
        frames = self.mem.frames
        fresh = list(filterfalse(frames.__contains__, pfns))
        self._fresh = None  # a probe that made none must not leave an older one's
        if not fresh:
            return
        self.mem.check(min(fresh) << 12)
        self.mem.check(max(fresh) << 12)
        block = _ARENA.take(len(fresh))
        frames.update(zip(fresh, block, strict=True))
        self._fresh = (fresh, block)  # fresh[i] is row i of block

    def drop_probed_frames(self, kept: list[int]) -> None:
        """Unmake the frames the last probe made for pages other than ``kept``: the
        caller stopped short of pages the probe readied (an injected allocation failure),
        and a page that is never stored to has no frame, as it would not have had."""
        if self._fresh is None:
            return
        fresh, block = self._fresh
        keep = set(kept)
        frames = self.mem.frames
        for p in filterfalse(keep.__contains__, fresh):
            del frames[p]
        n = len(keep.intersection(fresh))
        prefix = all(p in keep for p in fresh[:n])
        self._fresh = (fresh[:n], block[:n]) if n and prefix else None

    def commit_el1_zero_pages(self, vas: list[int], probed: Any) -> None:
        """``store_table(va, slice(None), 0)`` for each page probed by
        :meth:`probe_el1_stores`: count the hits, misses and walks, fill the TLB and
        zero the frames (those made by the probe are zero already)."""
        entries, walked, pfns = probed
        n = len(vas)
        made = self._fresh[0] if self._fresh is not None else []
        if walked is None:  # all walked: the probe's leaf columns (see probe_el1_stores)
            c, frames = entries, self.mem.frames
            pfns = pfns[:n]
            if made != pfns:  # else every frame was just made by the probe: zero already
                for p in filterfalse(set(made).__contains__, pfns):
                    frames[p][:] = 0
            self.tlb_misses += n
            self.walks += n
            self.stores += 512 * n
            if not n:
                return
            if isinstance(c, _UniformRun):  # one leaf shape: straight into the bulk tier
                if self.tlb.bulk_fill(0, c.vpns[:n], c.descs[:n], c.el1, c.el0):
                    return
                c = c.columns(n)  # a region holds other rights: the per-page form
            elif c[1].count(c[1][0]) >= n and c[2].count(c[2][0]) >= n:  # one set of rights
                descs = np.array(c[0][:n], dtype=np.uint64)
                if self.tlb.bulk_fill(0, _vpn_array(vas), descs, c[1][0], c[2][0]):
                    return
            self.tlb.entries.update(
                zip(
                    map(_SHR12, vas),
                    zip(c[4], c[1], c[2], c[3], repeat(3), c[0], map(frames.__getitem__, pfns)),
                    strict=False,  # the columns may run past the n pages committed
                )
            )
            return
        if made != pfns[:n]:  # else every frame was just made by the probe: zero already
            rows = set(made)
            for e in compress(entries[:n], map(not_, map(rows.__contains__, pfns[:n]))):
                e[6][:] = 0
        if all(walked[:n]):  # Tlb.insert_pages(items, 0), without the list of pairs
            self.tlb.entries.update(zip(map(_SHR12, vas), entries[:n], strict=True))
            misses = n
        else:
            items = [
                (va >> 12, e) for va, e, w in zip(vas, entries[:n], walked[:n], strict=True) if w
            ]
            self.tlb.insert_pages(items, 0)
            misses = len(items)
        self.tlb_misses += misses
        self.walks += misses
        self.tlb_hits += n - misses
        self.stores += 512 * n

    def commit_el0(
        self,
        vas: list[int],
        entries: list[TlbEntry | LeafEntry],
        faulted: int,
        extra: list[list[int]] | None,
        write: bool,
        value: int,
    ) -> None:
        """One-byte EL0 accesses to each page of ``vas`` (and the further addresses in
        ``extra``, same pages) that succeed with ``entries`` (a 6-tuple: a walk fills
        the TLB; a 7-tuple: a hit). ``faulted`` of the walks came after a translation
        fault on the same page (a first walk that faulted, counted here)."""
        tag = (self.asid + 1) << ASID_SHIFT
        mem = self.mem
        frames = mem.frames
        pfns = list(map(_SHR12, map(_FIRST, entries)))
        if set(map(len, entries)) == {6}:  # all walked (the usual batch): fills, in C
            if self._fresh is None or self._fresh[0] != pfns:  # else all just made
                for p in filterfalse(frames.__contains__, pfns):
                    mem.frame(p)
            if all(map(d.NG.__and__, map(_DESC, entries))):
                # Tlb.insert_pages(items, asid + 1), without the lists of keys and pairs
                self._asid_entries().update(
                    zip(
                        map(tag.__or__, map(_SHR12, vas)),
                        map(tuple.__add__, entries, zip(map(frames.__getitem__, pfns))),
                        strict=True,
                    )
                )
                walks = len(entries)
            else:
                keys = [
                    tag | (va >> 12) if e[5] & d.NG else va >> 12
                    for va, e in zip(vas, entries, strict=True)
                ]
                items = list(
                    zip(
                        keys,
                        map(tuple.__add__, entries, zip(map(frames.__getitem__, pfns))),
                        strict=True,
                    )
                )
                walks = len(items)
                self.tlb.insert_pages(items, None)
        else:
            for p, e in zip(pfns, entries, strict=True):
                if len(e) == 6 and p not in frames:  # a hit carries its frame
                    mem.frame(p)
            ng = d.NG
            items = [
                (tag | (va >> 12) if e[5] & ng else va >> 12, (*e, frames[p]))
                for va, e, p in zip(vas, entries, pfns, strict=True)
                if len(e) == 6
            ]
            walks = len(items)
            self.tlb.insert_pages(items, None)
        nbytes = len(vas) if extra is None else sum(len(a) for a in extra)
        if write:
            self._write_bytes(pfns, vas, extra, value & 0xFF)
        if faulted:
            self.faults["translation"] = self.faults.get("translation", 0) + faulted
        self.tlb_misses += walks + faulted
        self.walks += walks + faulted
        self.tlb_hits += nbytes - walks
        if write:
            self.stores += nbytes
        else:
            self.loads += nbytes

    def commit_el0_fresh(
        self, vas: list[int], descs: Any, leaf: LeafEntry, strip: int, write: bool, value: int
    ) -> None:
        """:meth:`commit_el0` of a run in which every page took a translation fault
        and then walked to its new level-3 descriptor ``descs[i]``: all of them the
        attributes of ``leaf`` under the table bits ``strip`` (a page leaf; the fresh PTEs
        of a batch come from one template), one byte access per page. Same TLB
        entries, insertion order, frames, counters and bytes as :meth:`commit_el0`
        with ``entries = leaf_entries(descs, strip)`` and ``faulted = len(vas)``,
        without the intermediate per-page leaf tuples."""
        if not leaf[5] & d.NG:  # a global user page: the general form
            leaves = self.leaf_entries(descs, strip)
            if None in leaves:  # the caller checked the leaf: never
                raise KpsimError("commit_el0_fresh: a descriptor that does not walk")
            self.commit_el0(
                vas, cast("list[TlbEntry | LeafEntry]", leaves), len(vas), None, write, value
            )
            return
        n = len(vas)
        oa = descs & np.uint64(d.OA_MASK)
        pfns = (oa >> np.uint64(12)).tolist()
        mem = self.mem
        frames = mem.frames
        if self._fresh is None or self._fresh[0] != pfns:  # else all just made
            for p in filterfalse(frames.__contains__, pfns):
                mem.frame(p)
        if not self.tlb.bulk_fill(self.asid + 1, _vpn_array(vas), descs, leaf[1], leaf[2]):
            self._fill_pages_el0(vas, oa.tolist(), descs.tolist(), pfns, leaf)
        if write:
            self._write_bytes(pfns, vas, None, value & 0xFF)
            self.stores += n
        else:
            self.loads += n
        self.faults["translation"] = self.faults.get("translation", 0) + n
        self.tlb_misses += 2 * n
        self.walks += 2 * n

    def _asid_entries(self) -> dict[int, TlbEntry]:
        """The current ASID's dict of non-global entries, made if it has none yet."""
        tlb = self.tlb.asids.get(self.asid + 1)
        if tlb is None:
            tlb = self.tlb.asids[self.asid + 1] = {}
        return tlb

    def _fill_pages_el0(
        self, vas: list[int], pas: list[int], descs: list[int], pfns: list[int], leaf: LeafEntry
    ) -> None:
        """Insert the TLB entries of :meth:`commit_el0_fresh` into the ASID's dict."""
        frames = self.mem.frames
        tag = (self.asid + 1) << ASID_SHIFT
        self._asid_entries().update(
            zip(
                map(tag.__or__, map(_SHR12, vas)),
                zip(
                    pas,
                    repeat(leaf[1]),
                    repeat(leaf[2]),
                    repeat(leaf[3]),
                    repeat(3),
                    descs,
                    map(frames.__getitem__, pfns),
                ),
                strict=True,
            )
        )

    def _write_bytes(
        self, pfns: list[int], vas: list[int], extra: list[list[int]] | None, val: int
    ) -> None:
        """Store byte ``val`` at each address (``vas``, or ``extra`` per page)."""
        made, block = self._fresh if self._fresh is not None else ([], None)
        self._fresh = None
        if extra is None and block is not None:
            at: Any
            if made == pfns:  # the usual batch: the rows of the block, in order
                at = np.arange(len(pfns))
            else:
                rows = dict(zip(made, range(len(made)), strict=True))
                at = list(map(rows.get, pfns, repeat(-1)))
            if -1 not in at:  # all in the block just made
                offs = np.asarray(vas, dtype=np.int64) & 0xFFF
                block.view(np.uint8).reshape(-1, 4096)[at, offs] = val
                return
        frames = self.mem.frames
        for p, va, i in zip(pfns, vas, range(len(vas)), strict=True):
            frame = frames[p]
            for a in [va] if extra is None else extra[i]:
                w = (a & 0xFFF) >> 3
                sh = (a & 7) << 3
                frame[w] = (frame.item(w) & ~(0xFF << sh)) | (val << sh)

    # -- TLB maintenance (broadcast to the inner-shareable domain) -----------------
    def tlbi_va(self, va: int, asid: int | None = None) -> None:
        self.system.tlbi_va(va, asid)

    def tlbi_range(self, start: int, end: int, asid: int | None = None) -> None:
        self.system.tlbi_range(start, end, asid)

    def tlbi_asid(self, asid: int) -> None:
        self.system.tlbi_asid(asid)

    def tlbi_all(self) -> None:
        self.system.tlbi_all()

    def counters(self) -> dict[str, int]:
        out = {
            "tlb_hit": self.tlb_hits,
            "tlb_miss": self.tlb_misses,
            "walk": self.walks,
            "load": self.loads,
            "store": self.stores,
            "por_write": self.por_writes,
            "isb": self.isbs,
        }
        for k, v in self.faults.items():
            out[f"fault_{k}"] = v
        return out
