"""The stage-1 table walker for the EL1&0 regime (4 KiB granule, 48-bit VA).

Models the Arm ARM translation process (``AArch64.S1Walk`` in the architecture
pseudocode): VA bits 63:48 select TTBR0 (all zeros, user half) or TTBR1 (all ones,
kernel half); four levels of 512-entry tables are read from physical memory; the
walk stops at a block or page descriptor. Hierarchical table permissions (APTable,
PXNTable, UXNTable) are applied along the way. The walk never writes (no hardware
Access-flag or dirty-state updates: TCR_EL1.HA/HD = 0).

A walk cache (:func:`walk_entry_wc`, held per CPU by :class:`~kpsim.hw.arm64.tlb.Tlb`)
caches the level 0-2 table descriptors of walks that reach a level-3 table, so a TLB
miss under a cached PTE table reads only the last level.

Left out: 52-bit VA, TTBR-level ASID/VMID nuances beyond one ASID per TTBR0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.physmem import PhysicalMemory

VA_BITS: Final = 48
USER_VA_END: Final = 1 << VA_BITS
KERNEL_VA_START: Final = (1 << 64) - (1 << VA_BITS)
_LEVELS: Final = ((0, 39), (1, 30), (2, 21), (3, 12))
_TABLE_LEVELS: Final = ((0, 39), (1, 30), (2, 21))
_TABLE_LEVELS_VPN: Final = ((0, 27), (1, 18), (2, 9))  # the same, of the page number
_STRIP: Final = d.AP_TABLE_RDONLY | d.AP_TABLE_NO_EL0 | d.PXN_TABLE | d.UXN_TABLE
_TRANSLATION: Final = int(FaultKind.TRANSLATION)
_ACCESS_FLAG: Final = int(FaultKind.ACCESS_FLAG)
_OA: Final = d.OA_MASK
_AF: Final = d.AF
_PAGE_OK: Final = d.VALID | d.TYPE | d.AF
_BLOCK_OA: Final = (0, d.BLOCK_OA_MASK[1], d.BLOCK_OA_MASK[2], d.BLOCK_OA_MASK[3])
#: A leaf as the TLB caches it: (page_pa, perm_el1, perm_el0, po_index, level, desc).
LeafEntry = tuple[int, int, int, int, int, int]


def _strip_perms(el1: int, el0: int, strip: int) -> tuple[int, int]:
    """Apply the hierarchical table bits (APTable, PXNTable, UXNTable) to leaf rights."""
    if strip & d.AP_TABLE_RDONLY:
        el1 &= ~d.Perm.W
        el0 &= ~d.Perm.W
    if strip & d.AP_TABLE_NO_EL0:  # APTable[0] removes EL0 data access, not EL0 execute
        el0 &= d.Perm.X
    if strip & d.PXN_TABLE:
        el1 &= ~d.Perm.X
    if strip & d.UXN_TABLE:
        el0 &= ~d.Perm.X
    return int(el1), int(el0)


def _perm_key(desc: int, strip: int) -> int:
    """Index into :data:`PERMS`: AP[2:1], PXN/UXN of the leaf, and the table bits."""
    return ((desc >> 6) & 3) | (((desc >> 53) & 3) << 2) | (((strip >> 59) & 0xF) << 4)


def _perm_table() -> tuple[tuple[int, int], ...]:
    out = []
    for key in range(256):
        leaf = ((key & 3) << 6) | (((key >> 2) & 3) << 53)
        out.append(_strip_perms(*d.base_perms(leaf), ((key >> 4) & 0xF) << 59))
    return tuple(out)


#: (EL1, EL0) rights for every combination of the bits that decide them (D8.4.1.2).
PERMS: Final = _perm_table()
PERMS_EL1: Final = np.array([p[0] for p in PERMS], dtype=np.int64)
PERMS_EL0: Final = np.array([p[1] for p in PERMS], dtype=np.int64)


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
        strip = (
            (d.AP_TABLE_RDONLY if strip_w else 0)
            | (d.AP_TABLE_NO_EL0 if strip_el0 else 0)
            | (d.PXN_TABLE if strip_px else 0)
            | (d.UXN_TABLE if strip_ux else 0)
        )
        el1, el0 = PERMS[_perm_key(desc, strip)]
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


def _leaf_entry(desc: int, level: int, strip: int, va: int, shift: int) -> LeafEntry | int:
    """A block leaf found by :func:`walk_entry` (level 1 or 2)."""
    if not desc & _AF:
        return _ACCESS_FLAG | level
    el1, el0 = PERMS[((desc >> 6) & 3) | (((desc >> 53) & 3) << 2) | (((strip >> 59) & 0xF) << 4)]
    page_pa = (desc & _BLOCK_OA[level]) + (va & ((1 << shift) - 1) & ~0xFFF)
    return (page_pa, el1, el0, (desc >> 60) & 7, level, desc)


def walk_leaf(desc: int, strip: int) -> LeafEntry | None:
    """The level-3 leaf a walk reaching ``desc`` under the table bits ``strip`` caches
    (None where it would fault: not a valid page, or no Access flag)."""
    if desc & _PAGE_OK != _PAGE_OK:
        return None
    el1, el0 = PERMS[_perm_key(desc, strip)]
    return (desc & _OA, el1, el0, (desc >> 60) & 7, 3, desc)


def walk_entry(mem: PhysicalMemory, table_pa: int, va: int) -> LeafEntry | int:
    """:func:`walk` for the TLB fill path: the leaf as the TLB caches it, or the fault
    status code (``FaultKind`` + level) as an int. Same checks, no objects made; the
    four levels are written out (this is the hottest function of the model)."""
    frames = mem.frames
    i = (va >> 39) & 0x1FF
    f = frames.get(table_pa >> 12)
    if f is None:
        mem.check(table_pa + (i << 3))
        return _TRANSLATION
    desc: int = f.item(i)
    if desc & 3 != 3:  # invalid, or a block at level 0 (reserved)
        return _TRANSLATION
    strip = desc
    pa = desc & _OA
    i = (va >> 30) & 0x1FF
    f = frames.get(pa >> 12)
    if f is None:
        mem.check(pa + (i << 3))
        return _TRANSLATION | 1
    desc = f.item(i)
    if not desc & 1:
        return _TRANSLATION | 1
    if not desc & 2:
        return _leaf_entry(desc, 1, strip, va, 30)
    strip |= desc
    pa = desc & _OA
    i = (va >> 21) & 0x1FF
    f = frames.get(pa >> 12)
    if f is None:
        mem.check(pa + (i << 3))
        return _TRANSLATION | 2
    desc = f.item(i)
    if not desc & 1:
        return _TRANSLATION | 2
    if not desc & 2:
        return _leaf_entry(desc, 2, strip, va, 21)
    strip |= desc
    pa = desc & _OA
    i = (va >> 12) & 0x1FF
    f = frames.get(pa >> 12)
    if f is None:
        mem.check(pa + (i << 3))
        return _TRANSLATION | 3
    desc = f.item(i)
    if desc & 3 != 3:  # invalid, or reserved at level 3
        return _TRANSLATION | 3
    if not desc & _AF:
        return _ACCESS_FLAG | 3
    el1, el0 = PERMS[((desc >> 6) & 3) | (((desc >> 53) & 3) << 2) | (((strip >> 59) & 0xF) << 4)]
    return (desc & _OA, el1, el0, (desc >> 60) & 7, 3, desc)


def walk_entry_wc(
    mem: PhysicalMemory,
    table_pa: int,
    va: int,
    walks: dict[int, dict[int, tuple[int, int]]],
    tag: int,
) -> LeafEntry | int:
    """:func:`walk_entry` through the walk cache ``walks[tag]`` (``tag`` 0: the kernel
    half, ASID + 1: the user half under that ASID): ``va >> 21`` -> (level-3 table pa,
    the table bits gathered above it), i.e. the level 0-2 table descriptors a walk to
    a PTE table read, cached together (Arm allows caching table entries). A hit reads
    only the level-3 entry; a miss walks all levels and caches the prefix when it
    reaches a level-3 table. Only valid table descriptors are cached; blocks and
    faults are not. (:func:`walk_vpn_wc` of ``va >> 12``.)"""
    return walk_vpn_wc(mem, table_pa, va >> 12, walks, tag)


def walk_vpn_wc(
    mem: PhysicalMemory,
    table_pa: int,
    vpn: int,
    walks: dict[int, dict[int, tuple[int, int]]],
    tag: int,
) -> LeafEntry | int:
    """:func:`walk_entry_wc` of the page ``vpn`` (the VA >> 12). A kernel VA is above
    2**63, a multi-word integer in compiled code; its page number fits a machine word,
    so every index of the walk is taken from the page number."""
    wc = walks.get(tag)
    if wc is None:
        wc = walks[tag] = {}
    hit = wc.get(vpn >> 9)
    if hit is None:
        frames = mem.frames
        pa = table_pa
        strip = 0
        for level, shift in _TABLE_LEVELS_VPN:
            i = (vpn >> shift) & 0x1FF
            f = frames.get(pa >> 12)
            if f is None:
                mem.check(pa + (i << 3))
                return _TRANSLATION | level
            desc: int = f.item(i)
            if not desc & 1:
                return _TRANSLATION | level
            if not desc & 2:
                if level == 0:  # a block at level 0 is reserved
                    return _TRANSLATION
                return _leaf_entry(desc, level, strip, vpn << 12, shift + 12)
            strip |= desc
            pa = desc & _OA
        wc[vpn >> 9] = (pa, strip)
    else:
        pa, strip = hit
    i = vpn & 0x1FF
    f = mem.frames.get(pa >> 12)
    if f is None:
        mem.check(pa + (i << 3))
        return _TRANSLATION | 3
    desc = f.item(i)
    if desc & 3 != 3:  # invalid, or reserved at level 3
        return _TRANSLATION | 3
    if not desc & _AF:
        return _ACCESS_FLAG | 3
    el1, el0 = PERMS[((desc >> 6) & 3) | (((desc >> 53) & 3) << 2) | (((strip >> 59) & 0xF) << 4)]
    return (desc & _OA, el1, el0, (desc >> 60) & 7, 3, desc)


def walk_to_pte_table(mem: PhysicalMemory, table_pa: int, va: int) -> tuple[int, int] | None:
    """The first three levels of :func:`walk`: (level-3 table pa, the table bits that
    apply to it), or None when the walk for ``va`` does not reach a level-3 table."""
    strip = 0
    pa = table_pa
    for _level, shift in _TABLE_LEVELS:
        desc = mem.read64(pa + (((va >> shift) & 0x1FF) << 3))
        if not desc & 1 or not desc & 2:
            return None
        strip |= desc
        pa = desc & d.OA_MASK
    return pa, strip & _STRIP


def leaf_perms(descs: Any, strip: int) -> tuple[Any, Any, Any]:
    """Vectorised leaf evaluation of level-3 descriptors under table bits ``strip``:
    (ok, EL1 rights, EL0 rights) where ``ok`` is valid page, Access flag set."""
    a = np.asarray(descs, dtype=np.uint64)
    ok = (a & np.uint64(d.VALID | d.TYPE | d.AF)) == np.uint64(d.VALID | d.TYPE | d.AF)
    key = ((a >> np.uint64(6)) & np.uint64(3)) | (
        ((a >> np.uint64(53)) & np.uint64(3)) << np.uint64(2)
    )
    key = key.astype(np.int64) | (((strip >> 59) & 0xF) << 4)
    return ok, PERMS_EL1[key], PERMS_EL0[key]
