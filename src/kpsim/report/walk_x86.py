"""One x86-64 virtual address's translation, level by level, as the MMU reads it from RAM.

Models what x86-64's ``dump_pagetable()`` (``arch/x86/mm/fault.c``, called by
``show_fault_oops`` after a kernel page fault) prints: one line ``PGD %lx P4D %lx PUD
%lx PMD %lx PTE %lx``, each entry's raw value in ``%lx`` (no padding), stopping after
an entry that is not present or is a leaf (``!pud_present() || pud_leaf()``). With
4-level paging the p4d is folded into the pgd, so ``P4D`` repeats the PGD entry, as on
a real kernel; a stop leaves the trailing blank of ``"PUD %lx "`` before the newline.
The walk starts at ``swapper_pg_dir`` (``init_top_pgt``) for kernel addresses; levels
are the hardware's (4 PML4 .. 1 PT, :mod:`kpsim.hw.x86.pte`). Reads RAM only: no TLB,
no counters, no state change. Left out: ``bad_address()`` (every table is in RAM
here), 5-level paging, PTI's user copy of the PGD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kpsim.arch.x86.memory import PAGE_END, PAGE_OFFSET, region_of
from kpsim.arch.x86.pgtable import PTE_PFN_MASK
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e

KERNEL_HALF = 0xFFFF_8000_0000_0000  # canonical addresses with bit 47 set
USER_END = 1 << 47
#: dump_pagetable's names, by hardware level (the p4d comes between PGD and PUD)
DUMP_NAME = {4: "PGD", 3: "PUD", 2: "PMD", 1: "PTE"}


@dataclass(frozen=True, slots=True)
class Step:
    """The entry read at one level (4 PML4 .. 1 PT): its table, index and raw value."""

    level: int
    table_pa: int
    index: int
    value: int

    @property
    def entry_pa(self) -> int:
        return self.table_pa + self.index * 8

    @property
    def name(self) -> str:
        """Linux's name of the level (pgd, pud, pmd, pte)."""
        return e.LINUX_NAME[self.level]

    @property
    def decode_kind(self) -> str:
        """The ``kpsim decode`` kind of this entry (``x86-pml4e`` ... ``x86-pte``)."""
        return f"x86-{e.LEVEL_NAME[self.level]}"


@dataclass(frozen=True, slots=True)
class Walk:
    """A finished walk of ``va`` from the PML4 at ``root_pa``."""

    va: int
    root_pa: int
    mm: str
    steps: tuple[Step, ...]

    @property
    def leaf(self) -> Step | None:
        last = self.steps[-1]
        return last if e.is_leaf(last.value, last.level) else None

    @property
    def pa(self) -> int | None:
        leaf = self.leaf
        if leaf is None:
            return None
        span = 1 << e.LEVEL_SHIFT[leaf.level]
        return e.leaf_address(leaf.value, leaf.level) + (self.va & (span - 1))

    @property
    def fault_level(self) -> int | None:
        """The level whose entry is not present (a #PF with P=0), or None."""
        return None if self.leaf is not None else self.steps[-1].level

    def show_pte(self) -> list[str]:
        """The line ``dump_pagetable()`` prints for this address."""
        parts = []
        for s in self.steps:
            parts.append(f"{DUMP_NAME[s.level]} {s.value:x}")
            if s.level == 4 and (s.value & e.P):  # p4d_offset() of a folded p4d
                parts.append(f"P4D {s.value:x}")
        line = " ".join(parts)
        return [line if self.steps[-1].level == 1 else line + " "]


def walk_tables(mem: PhysicalMemory, root_pa: int, va: int, mm: str) -> Walk:
    """Walk ``va`` from ``root_pa`` down to a leaf or to the first non-present entry."""
    steps: list[Step] = []
    table = root_pa
    for level in (4, 3, 2, 1):
        index = (va >> e.LEVEL_SHIFT[level]) & 0x1FF
        value = mem.read64(table + index * 8)
        steps.append(Step(level, table, index, value))
        if not value & e.P or e.is_leaf(value, level):
            break
        table = value & PTE_PFN_MASK
    return Walk(va, root_pa, mm, tuple(steps))


def walk(machine: Any, va: int, pgd_pa: int | None = None) -> Walk:
    """Walk a kernel address in ``swapper_pg_dir``, or a user address in the tables at
    ``pgd_pa``. ``ValueError`` for a non-canonical address, or a user address without
    ``pgd_pa``."""
    if va >= KERNEL_HALF:
        return walk_tables(machine.mem, machine.arch.swapper_pg_dir, va, "swapper")
    if va >= USER_END:
        raise ValueError(f"[{va:016x}] non-canonical address (bits 63:47 differ)")
    if pgd_pa is None:
        raise ValueError(f"[{va:016x}] user address but active_mm is swapper")
    return walk_tables(machine.mem, pgd_pa, va, "user")


def region(va: int) -> str:
    """The kernel region ``va`` lies in (``linear`` for the direct map), ``user`` or ``-``."""
    if va < USER_END:
        return "user"
    if PAGE_OFFSET <= va < PAGE_END:
        return "linear"
    return region_of(va) or "-"
