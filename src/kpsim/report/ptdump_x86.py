"""The kernel page tables as x86-64's ``/sys/kernel/debug/page_tables/kernel`` prints them.

Models ``arch/x86/mm/dump_pagetables.c`` (``ptdump_walk_pgd_level_core``,
``effective_prot``, ``note_page``, ``printk_prot``) over the generic walker of
``mm/ptdump.c`` and ``mm/pagewalk.c``, for 4-level paging:

- the walk covers x86-64's two ``ptdump_ranges``: ``[0, 1 << 47)`` and
  ``[GUARD_HOLE_END_ADDR, 2**64)`` (the hypervisor guard hole in between is never
  reported); each entry goes to ``note_page`` at its Linux level: 0 pgd, 2 pud, 3 pmd,
  4 pte (1, the folded p4d, is reported as 0, as ``real_depth()`` does); a none entry
  above the PTE level is a hole (``ptdump_hole``, value 0), every PTE is reported, a
  PDPTE or PDE with PS is a leaf;
- ``effective_prot`` runs for every entry the walk reads: ``prot_levels[level]`` is
  the entry's flags with U/S and R/W ANDed and NX ORed down the levels above it;
- ``note_page``: ``prot = val & PTE_FLAGS_MASK`` (bits 11:0 and 63:52: the accessed
  and dirty bits, the software bits and the protection key included, so a change of
  any of them breaks a run although ``printk_prot`` prints none of them); a run ends
  when ``prot``, the effective protection or the level changes or an address marker
  is reached; a marker line ``---[ name ]---`` follows the run that reached it (one
  marker per break, so a marker can be printed a run late, as on a real kernel); the
  final flush at level -1 ends the last run at ``0x0000000000000000``;
- ``printk_prot``'s columns: ``USR``, ``RW``/``ro``, ``PWT``, ``PCD``, ``PSE`` (levels
  above pte), ``PAT`` (bit 7 of a pte, bit 12 of a large page: masked off by
  ``PTE_FLAGS_MASK`` first, so never printed for one), ``GLB``, ``NX``/``x``, then the
  level name; 30 blanks for a non-present run. Sizes are ``%9lu%c`` in the largest unit
  of ``BKMGTPE`` dividing them.

x86 prints no protection key. ``pkey=True`` (``kpsim ptdump --pkey``) is kpsim's own
extension: `` pkey=N`` after the level name of each present run. Markers are those of
an x86-64 kernel with ``CONFIG_MODIFY_LDT_SYSCALL`` and ``CONFIG_X86_ESPFIX64`` and
without KASAN, EFI or KASLR, at the addresses of ``Documentation/arch/x86/x86_64/mm.rst``;
the fixmap, which kpsim does not model (its start depends on the configuration), has no
marker, and the areas kpsim leaves empty (LDT remap, CPU entry area, ESPfix) show as
holes. Left out: ``note_wx`` (``CONFIG_DEBUG_WX``), the ``... N entries skipped ...``
line (it needs more than 16 ESPfix runs), PTI's user page tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpsim.arch.x86.memory import (
    MODULES_END,
    MODULES_VADDR,
    PAGE_OFFSET,
    START_KERNEL_MAP,
    VMALLOC_START,
    VMEMMAP_START,
)
from kpsim.arch.x86.pgtable import PTE_PFN_MASK
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e
from kpsim.report.ptdump import Marker

U64 = 1 << 64
LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")  # printk_prot's level_name[]
KLEVEL = (0, 2, 3, 4)  # note_page level of an entry at walk depth 0 (PML4) .. 3 (PT)
SHIFT = (39, 30, 21, 12)
PTE_FLAGS_MASK = (U64 - 1) & ~PTE_PFN_MASK
_USER_RW = e.US | e.RW

LDT_BASE_ADDR = 0xFFFF_8800_0000_0000  # LDT_PGD_ENTRY_L4 (-240) << PGDIR_SHIFT
GUARD_HOLE_END_ADDR = LDT_BASE_ADDR  # GUARD_HOLE_BASE_ADDR + 16 PGD entries
CPU_ENTRY_AREA_BASE = 0xFFFF_FE00_0000_0000  # CPU_ENTRY_AREA_PGD (-4)
ESPFIX_BASE_ADDR = 0xFFFF_FF00_0000_0000  # ESPFIX_PGD_ENTRY (-2)
RANGES = ((0, 1 << 47), (GUARD_HOLE_END_ADDR, U64))  # ptdump_ranges (x86-64)

#: ``address_markers`` in ``enum address_markers_idx`` order: (start, name, max_lines)
MARKERS: tuple[tuple[int, str, int], ...] = (
    (0, "User Space", 0),
    (1 << 63, "Kernel Space", 0),
    (LDT_BASE_ADDR, "LDT remap", 0),
    (PAGE_OFFSET, "Low Kernel Mapping", 0),
    (VMALLOC_START, "vmalloc() Area", 0),
    (VMEMMAP_START, "Vmemmap", 0),
    (CPU_ENTRY_AREA_BASE, "CPU entry Area", 0),
    (ESPFIX_BASE_ADDR, "ESPfix Area", 16),
    (START_KERNEL_MAP, "High Kernel Mapping", 0),
    (MODULES_VADDR, "Modules", 0),
    (MODULES_END, "End Modules", 0),
    (U64 - 1, "", 0),
)
#: region -> (its start marker, the marker after it)
REGIONS: dict[str, tuple[str, str]] = {
    "linear": ("Low Kernel Mapping", "vmalloc() Area"),
    "vmalloc": ("vmalloc() Area", "Vmemmap"),
    "vmemmap": ("Vmemmap", "CPU entry Area"),
    "kimage": ("High Kernel Mapping", "Modules"),
    "modules": ("Modules", "End Modules"),
}
#: the regions ``kpsim ptdump --arch x86`` can cut (arm64's pci and fixmap: none here)
REGION_NAMES = ("all", *REGIONS)


def printk_prot(prot: int, level: int) -> str:
    """``printk_prot``: the flag columns, then the level name."""
    if not prot & e.P:
        return " " * 30 + LEVEL_NAMES[level]
    cols = [
        "USR " if prot & e.US else "    ",
        "RW " if prot & e.RW else "ro ",
        "PWT " if prot & e.PWT else "    ",
        "PCD " if prot & e.PCD else "    ",
        "PSE " if level <= 3 and prot & e.PS else "    ",
        "PAT "
        if (level == 4 and prot & e.PAT_4K) or (level in (2, 3) and prot & e.PAT_LARGE)
        else "    ",
        "GLB " if prot & e.G else "    ",
        "NX " if prot & e.NX else "x  ",
    ]
    return "".join(cols) + LEVEL_NAMES[level]


def size_text(nbytes: int) -> str:
    """``%9lu%c``: the size in the largest unit of ``BKMGTPE`` that divides it."""
    delta, unit = nbytes % U64, 0
    while not delta & 1023 and unit < 6:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{'BKMGTPE'[unit]}"


@dataclass(slots=True)
class Run:
    """One printed line: ``[start, end)`` at note_page ``level`` with ``prot``
    (``val & PTE_FLAGS_MASK``; 0 for a hole); ``pkey`` set when asked for."""

    start: int
    end: int
    level: int
    prot: int
    pkey: int | None = None

    def line(self) -> str:
        s = f"0x{self.start:016x}-0x{self.end % U64:016x}   "
        s += f"{size_text(self.end - self.start)} {printk_prot(self.prot, self.level)}"
        if self.pkey is not None and self.prot & e.P:
            s += f" pkey={self.pkey}"
        return s

    def as_dict(self) -> dict[str, Any]:
        present = bool(self.prot & e.P)
        out: dict[str, Any] = {
            "start": f"{self.start:#x}",
            "end": f"{self.end % U64:#x}",
            "size": (self.end - self.start) % U64,
            "level": LEVEL_NAMES[self.level],
            "hole": self.prot == 0,
            "present": present,
            "attrs": printk_prot(self.prot, self.level).split()[:-1],
        }
        if self.pkey is not None:
            out["pkey"] = self.pkey
        return out


Item = Run | Marker


# --------------------------------------------------------------------------- the walk


def _effective(higher: np.ndarray | int, prot: np.ndarray) -> np.ndarray:
    """``effective_prot`` below a level whose effective protection is ``higher``."""
    h = np.uint64(higher) if isinstance(higher, int) else higher
    return (h & prot & np.uint64(_USER_RW)) | ((h | prot) & np.uint64(e.NX))


def _walk(
    mem: PhysicalMemory,
    table_pa: int,
    depth: int,
    base: int,
    lo: int,
    hi: int,
    eff_in: int | None,
    out: list[tuple[int, int, int, int]],
) -> None:
    """Append ``(addr, note level, prot, effective prot)`` for every boundary in
    ``[lo, hi)`` of the table at ``table_pa`` (walk ``depth`` 0 PML4 .. 3 PT)."""
    shift = SHIFT[depth]
    i0 = (lo - base) >> shift if lo > base else 0
    i1 = min(512, ((hi - base - 1) >> shift) + 1)
    vals = mem.frame_ro(table_pa >> 12)[i0:i1]
    n = len(vals)
    prot = vals & np.uint64(PTE_FLAGS_MASK)
    eff = prot if eff_in is None else _effective(eff_in, prot)
    present = (vals & np.uint64(e.P)) != 0
    if depth == 3:  # walk_pte_range: every entry goes to note_page
        is_table = np.zeros(n, dtype=bool)
        noted = np.ones(n, dtype=bool)
    else:
        none = vals == np.uint64(0)
        leaf = present & ((vals & np.uint64(e.PS)) != 0) if depth else np.zeros(n, dtype=bool)
        is_table = present & ~leaf
        noted = none | leaf  # a non-present, non-none entry above the PTE: not reported
    eff = np.where(vals == np.uint64(0), np.uint64(0), eff)
    prot = np.where(is_table, np.uint64(0), prot)
    emit = np.ones(n, dtype=bool)
    emit[1:] = (prot[1:] != prot[:-1]) | (eff[1:] != eff[:-1]) | is_table[:-1] | ~noted[:-1]
    for m_addr, _name, _max in MARKERS[:-1]:  # the first entry at or past a marker
        if base + (i0 << shift) < m_addr < base + (i1 << shift):
            j = -(-(m_addr - base) // (1 << shift)) - i0
            emit[j:] |= np.cumsum(noted[j:] | is_table[j:]) == 1
    emit &= noted
    for k in np.flatnonzero(emit | is_table).tolist():
        va = base + ((i0 + k) << shift)
        if is_table[k]:
            child = int(vals[k]) & PTE_PFN_MASK
            sub_lo, sub_hi = max(lo, va), min(hi, va + (1 << shift))
            _walk(mem, child, depth + 1, va, sub_lo, sub_hi, int(eff[k]), out)
        else:
            out.append((max(lo, va), KLEVEL[depth], int(prot[k]), int(eff[k])))


def notes(mem: PhysicalMemory, root_pa: int) -> list[tuple[int, int, int, int]]:
    """Every boundary of ``ptdump_walk_pgd`` over x86-64's ranges, then the final
    flush ``(0, -1, 0, 0)``. Addresses are the canonical (sign-extended) ones."""
    out: list[tuple[int, int, int, int]] = []
    for lo, hi in RANGES:
        base = 0 if lo < (1 << 47) else U64 - (1 << 48)
        _walk(mem, root_pa, 0, base, lo, hi, None, out)
    out.append((0, -1, 0, 0))
    return out


def note_page(boundaries: Sequence[tuple[int, int, int, int]], pkey: bool = False) -> list[Item]:
    """x86's ``note_page`` state machine over the boundaries: lines and markers."""
    items: list[Item] = []
    marker, lines = 0, 0
    level, cur, cur_eff, start = -1, 0, 0, 0
    for addr, lvl, prot, eff in boundaries:
        if level == -1:
            level, cur, cur_eff, start = lvl, prot, eff, addr
            items.append(Marker(MARKERS[marker][1]))
            continue
        reached = addr >= MARKERS[marker + 1][0]
        if prot == cur and eff == cur_eff and lvl == level and not reached:
            continue
        max_lines = MARKERS[marker][2]
        if not max_lines or lines < max_lines:
            key = e.pkey(cur) if pkey else None
            items.append(Run(start, addr if addr else U64, level, cur, key))
        lines += 1
        if reached:
            marker += 1
            lines = 0
            items.append(Marker(MARKERS[marker][1]))
        level, cur, cur_eff, start = lvl, prot, eff, addr
    return items


def kernel_page_tables(machine: Any, pkey: bool = False) -> list[Item]:
    """The whole ``page_tables/kernel`` file of an x86 ``machine``: markers and lines."""
    return note_page(notes(machine.mem, machine.arch.swapper_pg_dir), pkey)


def select(items: Sequence[Item], region: str) -> list[Item]:
    """The part of the dump from ``region``'s marker to the next region's marker."""
    if region not in REGION_NAMES:
        raise ValueError(f"unknown x86 region {region!r}")
    if region == "all":
        return list(items)
    first, last = REGIONS[region]
    names = [i.name if isinstance(i, Marker) else None for i in items]
    if first not in names:
        return []
    a = names.index(first)
    b = names.index(last) if last in names else len(items) - 1
    return list(items[a : b + 1])


def ptdump(machine: Any, region: str = "all", pkey: bool = False) -> list[Item]:
    """The lines of ``page_tables/kernel`` for ``region`` (see :data:`REGION_NAMES`)."""
    return select(kernel_page_tables(machine, pkey), region)


__all__ = [
    "MARKERS",
    "REGION_NAMES",
    "Run",
    "kernel_page_tables",
    "note_page",
    "notes",
    "printk_prot",
    "ptdump",
    "select",
]
