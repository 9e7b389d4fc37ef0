"""The stage-1 table walker for the EL1&0 regime (4 KiB granule, 48-bit VA).

Models the Arm ARM translation process (``AArch64.S1Walk`` in the architecture
pseudocode): VA bits 63:48 select TTBR0 (all zeros, user half) or TTBR1 (all ones,
kernel half); four levels of 512-entry tables are read from physical memory; the
walk stops at a block or page descriptor. Hierarchical table permissions (APTable,
PXNTable, UXNTable) are applied along the way. The walk never writes (no hardware
Access-flag or dirty-state updates: TCR_EL1.HA/HD = 0).

Left out: walk caches (only leaf translations are cached, by the TLB), 52-bit VA,
TTBR-level ASID/VMID nuances beyond one ASID per TTBR0.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.physmem import PhysicalMemory

VA_BITS = 48
USER_VA_END = 1 << VA_BITS
KERNEL_VA_START = (1 << 64) - (1 << VA_BITS)
_LEVELS = ((0, 39), (1, 30), (2, 21), (3, 12))


@dataclass(frozen=True, slots=True)
class Translation:
    """A successful walk: the leaf, where it sits, and the permissions it grants."""

    va: int
    pa: int
    level: int
    desc: int
    desc_pa: int
    perm_el1: int
    perm_el0: int
    po_index: int

    @property
    def page_pa(self) -> int:
        return self.pa & ~0xFFF


def ttbr_select(va: int) -> int | None:
    """0 for the user half, 1 for the kernel half, None for a non-canonical address."""
    if va < USER_VA_END:
        return 0
    if va >= KERNEL_VA_START:
        return 1
    return None


def walk(
    mem: PhysicalMemory, table_pa: int, va: int, *, el: int = 1, write: bool = False
) -> Translation | Fault:
    """Walk from the top-level table at ``table_pa`` to the leaf mapping ``va``.

    Returns a :class:`Translation`, or a :class:`Fault` (translation or access-flag
    fault at the level where the walk stopped).
    """
    strip_w = strip_el0 = strip_px = strip_ux = False
    pa = table_pa
    for level, shift in _LEVELS:
        entry_pa = pa + (((va >> shift) & 0x1FF) << 3)
        desc = mem.read64(entry_pa)
        if not desc & d.VALID:
            return Fault(va, FaultKind.TRANSLATION, level, write=write, el=el)
        if level < 3 and desc & d.TYPE:
            strip_w |= bool(desc & d.AP_TABLE_RDONLY)
            strip_el0 |= bool(desc & d.AP_TABLE_NO_EL0)
            strip_px |= bool(desc & d.PXN_TABLE)
            strip_ux |= bool(desc & d.UXN_TABLE)
            pa = desc & d.OA_MASK
            continue
        if level == 0 or (level == 3 and not desc & d.TYPE):
            return Fault(va, FaultKind.TRANSLATION, level, write=write, el=el)
        if not desc & d.AF:
            return Fault(va, FaultKind.ACCESS_FLAG, level, write=write, el=el)
        el1, el0 = d.base_perms(desc)
        if strip_w:
            el1 &= ~d.Perm.W
            el0 &= ~d.Perm.W
        if strip_el0:  # APTable[0] removes EL0 data access, not EL0 execute
            el0 &= d.Perm.X
        if strip_px:
            el1 &= ~d.Perm.X
        if strip_ux:
            el0 &= ~d.Perm.X
        offset = va & ((1 << shift) - 1)
        return Translation(
            va=va,
            pa=(desc & d.BLOCK_OA_MASK[level]) + offset,
            level=level,
            desc=desc,
            desc_pa=entry_pa,
            perm_el1=int(el1),
            perm_el0=int(el0),
            po_index=d.po_index(desc),
        )
    raise AssertionError("unreachable: level 3 always returns")
