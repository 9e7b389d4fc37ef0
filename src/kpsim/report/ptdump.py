"""The kernel page tables as arm64's ``/sys/kernel/debug/kernel_page_tables`` prints them.

Models ``arch/arm64/mm/ptdump.c`` over the generic walker of ``mm/ptdump.c`` and
``mm/pagewalk.c``:

- one walk of ``init_mm`` from ``PAGE_OFFSET`` to the top of the address space
  (``ptdump_walk``), each entry reported to ``note_page`` at its level: 0 PGD, 2 PUD,
  3 PMD, 4 PTE (1 is the folded P4D: a missing entry found there is reported at the
  PGD level, as ``real_depth()`` does); a none entry above the PTE level is a hole
  (``ptdump_hole``), every PTE is reported whether present or not, an entry that is
  neither none nor a leaf nor a table above the PTE level is not reported;
- ``note_page``: ``prot = val & mask`` with ``mask`` the union of the ``pte_bits``
  masks (so DBM, the software bits, POIndex and the output address do not break a
  run); a line is printed when ``prot`` or the level changes or an address marker is
  reached, a marker line ``---[ name ]---`` whenever the walk passes a marker, and the
  last line, flushed at address 0, ends at ``0x0000000000000000`` as on a real kernel;
- the kernel's format strings: ``0x%016lx-0x%016lx   `` then ``%9lu%c %s`` (size in
  the largest unit of ``KMGTPE`` that divides it, level name) then `` %s`` for each
  ``pte_bits`` entry (the valid column ``F``, USR, ro/RW, NX/x, SHD, AF, NG, CON,
  BLK, UXN, GP and the memory type, ``MEM/NORMAL-TAGGED`` for the linear map).

The address markers are arm64's for the layout kpsim models (``memory.py``: vmemmap,
PCI I/O and the fixmap at the top, in address order, as kernels of that layout list
them). Left out: the KASAN shadow markers and ``ptdump_check_wx``. ``pkey=True``
(``kpsim ptdump --pkey``) is kpsim's own extension: POIndex joins the mask and each
valid line ends with `` pkey=N``. Runs are found with numpy per table (a change of
``prot``, a table entry or an address marker is a boundary), so Python only visits
boundaries; the ``note_page`` state machine then merges them exactly as the kernel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpsim.arch.arm64.memory import (
    FIXADDR_START,
    FIXADDR_TOP,
    KIMAGE_VADDR,
    MODULES_END,
    MODULES_VADDR,
    PAGE_END,
    PAGE_OFFSET,
    PCI_IO_END,
    PCI_IO_START,
    VMALLOC_END,
    VMALLOC_START,
    VMEMMAP_END,
    VMEMMAP_START,
)
from kpsim.arch.arm64.setup import KIMAGE_SIZE
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.physmem import PhysicalMemory

U64 = 1 << 64
LEVEL_NAMES = ("PGD", "P4D", "PUD", "PMD", "PTE")  # pg_level[].name, 4 levels
KLEVEL = (0, 2, 3, 4)  # note_page level of a descriptor at VMSA level 0..3


def _attr(idx: d.MemAttr) -> int:
    return int(idx) << d.ATTRINDX_SHIFT


#: ``pte_bits``: (mask, val, set, clear); a ``None`` clear prints nothing.
PTE_BITS: tuple[tuple[int, int, str, str | None], ...] = (
    (d.VALID, d.VALID, " ", "F"),
    (d.AP_USER, d.AP_USER, "USR", "   "),
    (d.AP_RDONLY, d.AP_RDONLY, "ro", "RW"),
    (d.PXN, d.PXN, "NX", "x "),
    (d.SH_INNER, d.SH_INNER, "SHD", "   "),
    (d.AF, d.AF, "AF", "  "),
    (d.NG, d.NG, "NG", "  "),
    (d.CONT, d.CONT, "CON", "   "),
    (d.TYPE, d.TYPE, "   ", "BLK"),  # PTE_TABLE_BIT
    (d.UXN, d.UXN, "UXN", "   "),
    (d.GP, d.GP, "GP", "  "),
    (d.ATTRINDX_MASK, _attr(d.MemAttr.DEVICE_nGnRnE), "DEVICE/nGnRnE", None),
    (d.ATTRINDX_MASK, _attr(d.MemAttr.DEVICE_nGnRE), "DEVICE/nGnRE", None),
    (d.ATTRINDX_MASK, _attr(d.MemAttr.NORMAL_NC), "MEM/NORMAL-NC", None),
    (d.ATTRINDX_MASK, _attr(d.MemAttr.NORMAL), "MEM/NORMAL", None),
    (d.ATTRINDX_MASK, _attr(d.MemAttr.NORMAL_TAGGED), "MEM/NORMAL-TAGGED", None),
)
PROT_MASK = 0
for _mask, _val, _set, _clear in PTE_BITS:
    PROT_MASK |= _mask

#: ``address_markers`` (start address, name), ending with the ``{ -1, NULL }`` sentinel
MARKERS: tuple[tuple[int, str], ...] = (
    (PAGE_OFFSET, "Linear Mapping start"),
    (PAGE_END, "Linear Mapping end"),
    (MODULES_VADDR, "Modules start"),
    (MODULES_END, "Modules end"),
    (VMALLOC_START, "vmalloc() area"),
    (VMALLOC_END, "vmalloc() end"),
    (VMEMMAP_START, "vmemmap start"),
    (VMEMMAP_END, "vmemmap end"),
    (PCI_IO_START, "PCI I/O start"),
    (PCI_IO_END, "PCI I/O end"),
    (FIXADDR_START, "Fixmap start"),
    (FIXADDR_TOP, "Fixmap end"),
    (U64 - 1, ""),
)
#: region -> (its start marker, its end marker)
REGIONS: dict[str, tuple[str, str]] = {
    "linear": ("Linear Mapping start", "Linear Mapping end"),
    "modules": ("Modules start", "Modules end"),
    "vmalloc": ("vmalloc() area", "vmalloc() end"),
    "vmemmap": ("vmemmap start", "vmemmap end"),
    "pci": ("PCI I/O start", "PCI I/O end"),
    "fixmap": ("Fixmap start", "Fixmap end"),
}
REGION_NAMES = ("all", "linear", "vmalloc", "vmemmap", "kimage", "modules", "pci", "fixmap")


def dump_prot(prot: int) -> str:
    """``dump_prot``: `` %s`` for each ``pte_bits`` entry, set or clear."""
    out = []
    for mask, val, set_, clear in PTE_BITS:
        s = set_ if (prot & mask) == val else clear
        if s is not None:
            out.append(f" {s}")
    return "".join(out)


def size_text(nbytes: int) -> str:
    """``%9lu%c``: the size in the largest unit of ``KMGTPE`` that divides it."""
    delta, unit = (nbytes % U64) >> 10, 0
    while not delta & 1023 and unit < 5:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{'KMGTPE'[unit]}"


@dataclass(slots=True)
class Run:
    """One printed line: ``[start, end)`` at note_page level ``level`` with ``prot``
    (``val & mask``; 0 for a hole). ``pkey`` is set when POIndex is tracked."""

    start: int
    end: int
    level: int
    prot: int
    pkey: int | None = None

    def line(self) -> str:
        s = f"0x{self.start:016x}-0x{self.end % U64:016x}   "
        s += f"{size_text(self.end - self.start)} {LEVEL_NAMES[self.level]}"
        if self.prot:
            s += dump_prot(self.prot)
            if self.pkey is not None and self.prot & d.VALID:
                s += f" pkey={self.pkey}"
        return s

    def as_dict(self) -> dict[str, Any]:
        out = {
            "start": f"{self.start:#x}",
            "end": f"{self.end % U64:#x}",
            "size": (self.end - self.start) % U64,
            "level": LEVEL_NAMES[self.level],
            "hole": self.prot == 0,
            "valid": bool(self.prot & d.VALID),
            "attrs": dump_prot(self.prot).split() if self.prot else [],
        }
        if self.pkey is not None:
            out["pkey"] = self.pkey
        return out


@dataclass(frozen=True, slots=True)
class Marker:
    name: str

    def line(self) -> str:
        return f"---[ {self.name} ]---"


Item = Run | Marker


# --------------------------------------------------------------------------- the walk


def _walk(
    mem: PhysicalMemory,
    table_pa: int,
    level: int,
    base: int,
    lo: int,
    hi: int,
    mask: int,
    out: list[tuple[int, int, int]],
) -> None:
    """Append ``(addr, note level, prot)`` for every boundary in ``[lo, hi)`` of the
    table at ``table_pa`` (VMSA ``level``, covering from ``base``)."""
    shift = d.LEVEL_SHIFT[level]
    i0 = (lo - base) >> shift if lo > base else 0
    i1 = min(512, ((hi - base - 1) >> shift) + 1)
    vals = mem.frame_ro(table_pa >> 12)[i0:i1]
    n = len(vals)
    low = vals & np.uint64(3)
    if level == 3:  # walk_pte_range: every entry goes to pte_entry
        is_table = np.zeros(n, dtype=bool)
        noted = np.ones(n, dtype=bool)
        prot = vals & np.uint64(mask)
    else:
        is_table = low == np.uint64(3)
        none = vals == np.uint64(0)
        leaf = low == np.uint64(1) if level else np.zeros(n, dtype=bool)
        noted = ~is_table if level == 0 else none | leaf  # a bad pgd is cleared: a hole
        prot = np.where(leaf, vals & np.uint64(mask), np.uint64(0))
    emit = np.ones(n, dtype=bool)
    emit[1:] = (prot[1:] != prot[:-1]) | is_table[:-1] | ~noted[:-1]
    for m_addr, _name in MARKERS[:-1]:  # the first reported entry at or past a marker
        if base + (i0 << shift) < m_addr < base + (i1 << shift):
            j = -(-(m_addr - base) // (1 << shift)) - i0
            emit[j:] |= np.cumsum(noted[j:] | is_table[j:]) == 1
    emit &= noted
    kl = KLEVEL[level]
    for k in np.flatnonzero(emit | is_table).tolist():
        va = base + ((i0 + k) << shift)
        if is_table[k]:
            child = int(vals[k]) & d.OA_MASK
            _walk(mem, child, level + 1, va, max(lo, va), min(hi, va + (1 << shift)), mask, out)
        else:
            out.append((max(lo, va), kl, int(prot[k])))


def notes(mem: PhysicalMemory, root_pa: int, pkey: bool = False) -> list[tuple[int, int, int]]:
    """Every boundary of ``ptdump_walk`` over ``[PAGE_OFFSET, 2**64)``, then the final
    flush ``(0, -1, 0)``."""
    out: list[tuple[int, int, int]] = []
    mask = PROT_MASK | (d.POINDEX_MASK if pkey else 0)
    _walk(mem, root_pa, 0, PAGE_OFFSET & ~((1 << 48) - 1), PAGE_OFFSET, U64, mask, out)
    out.append((0, -1, 0))
    return out


def note_page(boundaries: Sequence[tuple[int, int, int]], pkey: bool = False) -> list[Item]:
    """arm64's ``note_page`` state machine over the boundaries: lines and markers."""
    items: list[Item] = []
    marker = 0
    level, cur, start = -1, 0, 0
    for addr, lvl, prot in boundaries:
        if level == -1:
            level, cur, start = lvl, prot, addr
            items.append(Marker(MARKERS[marker][1]))
        elif prot != cur or lvl != level or addr >= MARKERS[marker + 1][0]:
            end = addr if addr else U64
            items.append(Run(start, end, level, cur, d.po_index(cur) if pkey else None))
            if addr >= MARKERS[marker + 1][0]:
                marker += 1
                items.append(Marker(MARKERS[marker][1]))
            level, cur, start = lvl, prot, addr
        if addr >= MARKERS[marker + 1][0]:
            marker += 1
            items.append(Marker(MARKERS[marker][1]))
    return items


def kernel_page_tables(machine: Any, pkey: bool = False) -> list[Item]:
    """The whole ``kernel_page_tables`` file of ``machine``: markers and lines."""
    return note_page(notes(machine.mem, machine.arch.swapper_pg_dir, pkey), pkey)


# --------------------------------------------------------------------------- selection


def _between(items: Sequence[Item], first: str, last: str) -> list[Item]:
    """From marker ``first`` to marker ``last``; empty if the walk printed neither (no
    entry was reported past them: nothing maps the range's top-level entries)."""
    names = [i.name if isinstance(i, Marker) else None for i in items]
    if first not in names:
        return []
    a = names.index(first)
    b = names.index(last) if last in names else len(items) - 1
    return list(items[a : b + 1])


def select(items: Sequence[Item], region: str) -> list[Item]:
    """The part of the dump for ``region``: its start marker, its lines, its end
    marker (``kimage``: the vmalloc() lines that overlap the kernel image)."""
    if region not in REGION_NAMES:
        raise ValueError(f"unknown region {region!r}")
    if region == "all":
        return list(items)
    if region == "kimage":
        part = _between(items, *REGIONS["vmalloc"])
        lo, hi = KIMAGE_VADDR, KIMAGE_VADDR + KIMAGE_SIZE
        return [i for i in part if isinstance(i, Marker) or (i.start < hi and i.end > lo)]
    return _between(items, *REGIONS[region])


def ptdump(machine: Any, region: str = "all", pkey: bool = False) -> list[Item]:
    """The lines of ``kernel_page_tables`` for ``region`` (see :data:`REGION_NAMES`)."""
    return select(kernel_page_tables(machine, pkey), region)


def ptdump_lines(items: Sequence[Item]) -> Iterator[str]:
    return (i.line() for i in items)


def ptdump_text(items: Sequence[Item]) -> str:
    return "".join(f"{line}\n" for line in ptdump_lines(items))


def ptdump_json(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Sections: each marker with the lines printed after it."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Marker):
            out.append({"marker": item.name, "entries": []})
        elif out:
            out[-1]["entries"].append(item.as_dict())
    return out


__all__ = [
    "MARKERS",
    "PTE_BITS",
    "REGION_NAMES",
    "Marker",
    "Run",
    "kernel_page_tables",
    "note_page",
    "notes",
    "ptdump",
    "ptdump_json",
    "ptdump_text",
    "select",
]
