"""The kernel page tables in the style of arm64's ``kernel_page_tables`` debugfs file.

Models ``arch/arm64/mm/ptdump.c`` / ``mm/ptdump.c``: address markers around each
region, then one line per run of consecutive entries at the same level with identical
attributes (``note_page``: the comparison covers every attribute bit, the output
address excluded), holes not printed. Runs are found with numpy per table (a change
of attributes or a table entry ends a run); Python only visits run boundaries.
Columns: range, size, level, the arm64 ``pte_bits`` names, memory type, and a
``pkey=`` column with the POIndex. Left out: the PIE/GCS columns, the ``ptdump_check_wx``
pass, and markers for KASAN shadow.
"""

from __future__ import annotations

import itertools
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
from kpsim.report.linear_map import KERNEL_HALF
from kpsim.units import format_size

LEVEL_LABEL = ("PGD", "PUD", "PMD", "PTE")
ATTR_MASK = ((1 << 64) - 1) & ~d.OA_MASK
MEM_TYPES = {
    0: "MEM/NORMAL",
    1: "MEM/NORMAL-TAGGED",
    2: "MEM/NORMAL-NC",
    3: "DEVICE/nGnRnE",
    4: "DEVICE/nGnRE",
}
# name -> [(start, end, marker name)]: the sections printed for a region
SECTIONS: dict[str, list[tuple[int, int, str]]] = {
    "linear": [(PAGE_OFFSET, PAGE_END, "Linear Mapping")],
    "modules": [(MODULES_VADDR, MODULES_END, "Modules")],
    "vmalloc": [(VMALLOC_START, VMALLOC_END, "vmalloc() area")],
    "kimage": [(KIMAGE_VADDR, KIMAGE_VADDR + KIMAGE_SIZE, "Kernel Image")],
    "vmemmap": [(VMEMMAP_START, VMEMMAP_END, "vmemmap")],
    "pci": [(PCI_IO_START, PCI_IO_END, "PCI I/O")],
    "fixmap": [(FIXADDR_START, FIXADDR_TOP, "Fixmap")],
}
REGION_NAMES = ("all", "linear", "vmalloc", "vmemmap", "kimage", "modules", "pci", "fixmap")
_ALL = ("linear", "modules", "vmalloc", "vmemmap", "pci", "fixmap")


@dataclass(slots=True)
class Run:
    """One printed line: [start, end) at ``level`` with attribute bits ``attrs``."""

    start: int
    end: int
    level: int
    attrs: int

    def columns(self) -> list[str]:
        a = self.attrs
        leaf_block = self.level < 3
        return [
            "USR" if a & d.AP_USER else "   ",
            "ro" if a & d.AP_RDONLY else "RW",
            "NX" if a & d.PXN else "x ",
            "SHD" if (a & d.SH_MASK) == d.SH_INNER else "   ",
            "AF" if a & d.AF else "  ",
            "NG" if a & d.NG else "  ",
            "CON" if a & d.CONT else "   ",
            "BLK" if leaf_block else "   ",
            "UXN" if a & d.UXN else "   ",
            "DBM" if a & d.DBM else "   ",
            MEM_TYPES.get((a & d.ATTRINDX_MASK) >> d.ATTRINDX_SHIFT, "MEM/?"),
        ]

    def line(self) -> str:
        size = format_size(self.end - self.start)
        cols = " ".join(self.columns())
        pkey = d.po_index(self.attrs)
        return (
            f"0x{self.start:016x}-0x{self.end:016x} {size:>9} {LEVEL_LABEL[self.level]}"
            f"  {cols}  pkey={pkey}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": f"{self.start:#x}",
            "end": f"{self.end:#x}",
            "size": self.end - self.start,
            "level": LEVEL_LABEL[self.level],
            "attrs": [c for c in self.columns() if c.strip()],
            "pkey": d.po_index(self.attrs),
            "raw_attrs": f"{self.attrs:#x}",
        }


def _note(runs: list[Run], start: int, end: int, level: int, attrs: int) -> None:
    """``note_page``: extend the last run or start a new one (holes have attrs 0)."""
    if runs:
        last = runs[-1]
        if last.end == start and last.level == level and last.attrs == attrs:
            last.end = end
            return
    runs.append(Run(start, end, level, attrs))


def _walk(
    mem: PhysicalMemory, table_pa: int, level: int, base: int, lo: int, hi: int, runs: list[Run]
) -> None:
    shift = d.LEVEL_SHIFT[level]
    i0 = (lo - base) >> shift if lo > base else 0
    i1 = min(512, ((hi - base - 1) >> shift) + 1)
    vals = mem.frame_ro(table_pa >> 12)[i0:i1]
    low = vals & np.uint64(3)
    if level == 3:
        is_table = np.zeros(len(vals), dtype=bool)
        leaf = low == np.uint64(3)
    else:
        is_table = low == np.uint64(3)
        leaf = low == np.uint64(1) if level in (1, 2) else np.zeros(len(vals), dtype=bool)
    key = np.where(leaf, vals & np.uint64(ATTR_MASK), np.uint64(0))
    brk = np.ones(len(vals), dtype=bool)
    brk[1:] = (key[1:] != key[:-1]) | is_table[1:] | is_table[:-1]
    starts = [*np.flatnonzero(brk).tolist(), len(vals)]
    for s, e in itertools.pairwise(starts):
        va = base + ((i0 + s) << shift)
        if is_table[s]:
            child = int(vals[s]) & d.OA_MASK
            _walk(mem, child, level + 1, va, max(lo, va), min(hi, va + (1 << shift)), runs)
            continue
        end = min(hi, base + ((i0 + e) << shift))
        _note(runs, max(lo, va), end, level, int(key[s]))


def ptdump_runs(mem: PhysicalMemory, root_pa: int, lo: int, hi: int) -> list[Run]:
    """Merged present runs of the tree at ``root_pa`` over [lo, hi)."""
    runs: list[Run] = []
    _walk(mem, root_pa, 0, KERNEL_HALF, lo, hi, runs)
    return [r for r in runs if r.attrs]


def ptdump(machine: Any, region: str = "all") -> list[dict[str, Any]]:
    """Sections for ``region``: ``[{"name", "start", "end", "runs": [Run...]}]``."""
    if region not in REGION_NAMES:
        raise ValueError(f"unknown region {region!r}")
    names = _ALL if region == "all" else (region,)
    out = []
    for name in names:
        for lo, hi, label in SECTIONS[name]:
            runs = ptdump_runs(machine.mem, machine.arch.swapper_pg_dir, lo, hi)
            out.append({"name": label, "start": lo, "end": hi, "runs": runs})
    return out


def ptdump_text(sections: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for sec in sections:
        lines.append(f"---[ {sec['name']} start ]---")
        lines.extend(r.line() for r in sec["runs"])
        lines.append(f"---[ {sec['name']} end ]---")
    return "\n".join(lines) + "\n"


def ptdump_json(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": s["name"],
            "start": f"{s['start']:#x}",
            "end": f"{s['end']:#x}",
            "entries": [r.as_dict() for r in s["runs"]],
        }
        for s in sections
    ]
