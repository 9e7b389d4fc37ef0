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

from typing import TYPE_CHECKING

from kpsim.errors import AccessFault, KpsimError
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import KERNEL_VA_START, USER_VA_END, Translation, walk
from kpsim.hw.arm64.por import overlay_table
from kpsim.hw.arm64.tlb import ASID_SHIFT, Tlb, TlbEntry
from kpsim.hw.physmem import PhysicalMemory

if TYPE_CHECKING:
    from kpsim.hw.arm64.system import Arm64System

R, X, W = 1, 2, 4
_NO_OVERLAY = (7,) * 8


class Undefined(KpsimError):
    """An UNDEFINED instruction: e.g. an MSR to POR_EL1 on a CPU without POE."""


class Cpu:
    """One processing element. Hot counters are plain int attributes."""

    __slots__ = (
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
        self.tlb_hits = self.tlb_misses = self.walks = 0
        self.loads = self.stores = self.por_writes = self.isbs = 0
        self.faults: dict[str, int] = {}

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
        self._ov1 = overlay_table(self.por_el1) if self.tcr2_poe else _NO_OVERLAY
        self._ov0 = overlay_table(self.por_el0) if self.tcr2_e0poe else _NO_OVERLAY

    @property
    def por_el1_in_effect(self) -> tuple[int, ...]:
        return self._ov1

    def switch_ttbr0(self, table_pa: int | None, asid: int) -> None:
        """Install a user address space (TTBR0_EL1 with its ASID)."""
        self.ttbr0 = table_pa
        self.asid = asid

    # -- translation -------------------------------------------------------------
    def translate(self, va: int, *, el: int = 1, write: bool = False) -> TlbEntry | Fault:
        """Look ``va`` up in the TLB, walking and filling on a miss."""
        key = va >> 12 if va >= KERNEL_VA_START else ((self.asid + 1) << ASID_SHIFT) | (va >> 12)
        e = self.tlb.entries.get(key)
        if e is not None:
            self.tlb_hits += 1
            return e
        return self._fill(va, key, el, write)

    def _fill(self, va: int, key: int, el: int, write: bool) -> TlbEntry | Fault:
        if va < USER_VA_END:
            e = self.tlb.entries.get(va >> 12)  # a global entry in the user half
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
            return Fault(va, FaultKind.TRANSLATION, 0, write=write, el=el)
        self.walks += 1
        t = walk(self.mem, table, va, el=el, write=write)
        if isinstance(t, Fault):
            return t
        return self._insert(t, key)

    def _insert(self, t: Translation, key: int) -> TlbEntry:
        global_ = not t.desc & d.NG
        if global_ and key >= (1 << ASID_SHIFT) and t.va < USER_VA_END:
            key = t.va >> 12
        page_pa = t.page_pa
        entry: TlbEntry = (
            page_pa,
            t.perm_el1,
            t.perm_el0,
            t.po_index,
            t.level,
            t.desc,
            self.mem.frame(page_pa >> 12),
        )
        shift = d.LEVEL_SHIFT[t.level]
        if t.desc & d.CONT:
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
        name = "overlay" if f.overlay else f.kind.name.lower()
        self.faults[name] = self.faults.get(name, 0) + 1
        return AccessFault(f)

    # -- the access API ------------------------------------------------------------
    def store(self, va: int, value: int, size: int = 8, el: int = 1) -> None:
        """Store ``size`` bytes (1, 2, 4, 8) little-endian at ``va``; raise AccessFault."""
        key = va >> 12 if va >= KERNEL_VA_START else ((self.asid + 1) << ASID_SHIFT) | (va >> 12)
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
        f = self._check(table_va, e, 1, W, True)
        if f is not None:
            raise self._raise(f)
        frame = e[6]
        frame[index] = values
        if isinstance(index, int):
            n = 1
        elif isinstance(index, slice):
            n = len(range(*index.indices(512)))
        else:
            n = len(index)  # type: ignore[arg-type]
        self.stores += n
        return n

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
