"""One virtual address's translation, level by level, as the MMU reads it from RAM.

Models what arm64's ``show_pte()`` (``arch/arm64/mm/fault.c``) prints after an oops:
``<mm> pgtable: 4k pages, 48-bit VAs, pgdp=<pa>`` then ``[<va>] pgd=..., p4d=...,
pud=..., pmd=..., pte=...``, stopping after the first entry that is none or not a
table (``pgd_none() || pgd_bad()``). With four levels and 48-bit VAs the p4d level is
folded into the pgd, so ``p4d=`` repeats the pgd entry, as on a real kernel.
Each step also carries its decoded descriptor (:class:`Descriptor`) for ``kpsim walk``.
Reads RAM only: no TLB, no counters, no state change. Left out: 52-bit VAs and LPA2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kpsim.arch.arm64.memory import PAGE_END, PAGE_OFFSET, region_of
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.physmem import PhysicalMemory

KERNEL_HALF = PAGE_OFFSET  # TTBR1: addresses from here up
USER_END = 1 << 48  # TTBR0: addresses below


@dataclass(frozen=True, slots=True)
class Step:
    """The entry read at one level: its table, index and raw value."""

    level: int
    table_pa: int
    index: int
    value: int

    @property
    def entry_pa(self) -> int:
        return self.table_pa + self.index * 8

    @property
    def desc(self) -> d.Descriptor:
        return d.Descriptor.decode(self.value, self.level)

    @property
    def name(self) -> str:
        return d.LEVEL_NAME[self.level]


@dataclass(frozen=True, slots=True)
class Walk:
    """A finished walk of ``va`` from the root table at ``root_pa``."""

    va: int
    root_pa: int
    mm: str  # "swapper" (init_mm) or "user"
    steps: tuple[Step, ...]

    @property
    def leaf(self) -> Step | None:
        """The block or page entry that maps ``va``, if the walk reached one."""
        last = self.steps[-1]
        return last if d.is_leaf(last.value, last.level) else None

    @property
    def pa(self) -> int | None:
        """The physical address ``va`` translates to, or None (a translation fault)."""
        leaf = self.leaf
        if leaf is None:
            return None
        span = d.level_size(leaf.level)
        return d.output_address(leaf.value, leaf.level) + (self.va & (span - 1))

    @property
    def fault_level(self) -> int | None:
        """The level of the translation fault an access would take, or None."""
        return None if self.leaf is not None else self.steps[-1].level

    def show_pte(self) -> list[str]:
        """The two lines arm64's ``show_pte()`` prints for this address."""
        head = f"{self.mm} pgtable: 4k pages, 48-bit VAs, pgdp={self.root_pa:016x}"
        parts = [f"pgd={self.steps[0].value:016x}"]
        if len(self.steps) > 1:  # p4d folded into pgd: the kernel prints it again
            parts.append(f"p4d={self.steps[0].value:016x}")
        parts += [f"{s.name}={s.value:016x}" for s in self.steps[1:]]
        return [head, f"[{self.va:016x}] " + ", ".join(parts)]


def walk_tables(mem: PhysicalMemory, root_pa: int, va: int, mm: str) -> Walk:
    """Walk ``va`` from ``root_pa`` down to a leaf or to the first non-table entry."""
    steps: list[Step] = []
    table = root_pa
    for level in range(4):
        index = (va >> d.LEVEL_SHIFT[level]) & 0x1FF
        value = mem.read64(table + index * 8)
        steps.append(Step(level, table, index, value))
        if d.kind(value, level) is not d.Kind.TABLE or level == 3:
            break
        table = value & d.OA_MASK
    return Walk(va, root_pa, mm, tuple(steps))


def walk(machine: Any, va: int, pgd_pa: int | None = None) -> Walk:
    """Walk a kernel address in ``swapper_pg_dir``, or a user address in the page
    tables at ``pgd_pa`` (a process's ``mm->pgd``). ``ValueError`` when the address
    is in neither half, or is a user address and no ``pgd_pa`` was given (the
    kernel's "user address but active_mm is swapper")."""
    if va >= KERNEL_HALF:
        return walk_tables(machine.mem, machine.arch.swapper_pg_dir, va, "swapper")
    if va >= USER_END:
        raise ValueError(f"[{va:016x}] address between user and kernel address ranges")
    if pgd_pa is None:
        raise ValueError(f"[{va:016x}] user address but active_mm is swapper")
    return walk_tables(machine.mem, pgd_pa, va, "user")


def region(va: int) -> str:
    """The kernel region ``va`` lies in (``linear``, ``vmalloc``...), ``user`` or ``-``."""
    if va < USER_END:
        return "user"
    if PAGE_OFFSET <= va < PAGE_END:
        return "linear"
    return region_of(va) or "-"
