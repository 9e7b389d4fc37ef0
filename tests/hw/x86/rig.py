"""A tiny x86 machine for the hw/x86 tests: DRAM, a CPU and a page-table builder."""

from __future__ import annotations

from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.cpu import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PKS, X86Cpu

DRAM = 1 << 32  # 4 GiB at 0: room for 1 GiB pages
KERNEL_VA = 0xFFFF_8880_0000_0000  # Linux's direct map base (4-level)
USER_VA = 0x0000_7F00_0000_0000


class Rig:
    def __init__(self) -> None:
        self.mem = PhysicalMemory(0, DRAM)
        self.cpu = X86Cpu(self.mem, maxphyaddr=46)
        self.next_frame = 0x100000  # page tables from 1 MiB up
        self.pml4 = self.alloc()
        self.cpu.mov_cr3(self.pml4)

    def alloc(self) -> int:
        pa = self.next_frame
        self.next_frame += 0x1000
        return pa

    def entry_pa(self, va: int, level: int, *, create: bool = True, us: bool = True) -> int:
        """The physical address of the level-``level`` entry for ``va``, making the
        tables above it (RW=1; US as given) if needed."""
        table = self.pml4
        for lv in (4, 3, 2, 1):
            epa = table + (((va >> e.LEVEL_SHIFT[lv]) & 0x1FF) << 3)
            if lv == level:
                return epa
            v = self.mem.read64(epa)
            if not v & e.P:
                if not create:
                    raise KeyError(va)
                nxt = self.alloc()
                self.mem.write64(epa, e.table_entry(nxt, us=us))
                v = self.mem.read64(epa)
            table = v & e.addr_mask(46)
        raise AssertionError(level)

    def map(self, va: int, pa: int, level: int = 1, **kw: object) -> int:
        """Map ``va`` to ``pa`` with a leaf at ``level``; the entry's address."""
        epa = self.entry_pa(va, level, us=bool(kw.get("us", False)))
        self.mem.write64(epa, e.leaf_entry(pa, level, **kw))  # type: ignore[arg-type]
        return epa

    def set_entry(self, epa: int, value: int) -> None:
        self.mem.write64(epa, value)

    def enable_pks(self) -> None:
        self.cpu.mov_cr4(self.cpu.cr4 | CR4_PKS)

    def wp(self, on: bool) -> None:
        self.cpu.mov_cr0(CR0_PE | CR0_PG | (CR0_WP if on else 0))


__all__ = ["CR4_PAE", "CR4_PGE", "DRAM", "KERNEL_VA", "USER_VA", "Rig"]
