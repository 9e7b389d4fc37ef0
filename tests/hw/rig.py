"""A small test rig: one machine with hand-built page tables (not a test module).

Tables are carved from the bottom of DRAM by a bump allocator; data frames come
from the top half. Every helper writes real descriptors into simulated RAM, so the
MMU under test walks exactly the bits a test put there.
"""

from __future__ import annotations

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.arm64.mmu import KERNEL_VA_START
from kpsim.hw.arm64.system import Arm64System
from kpsim.hw.physmem import PhysicalMemory

DRAM_BASE = 0x4000_0000
USER_VA = 0x0000_0040_0000_0000  # 1G-aligned, inside TTBR0's range
KERNEL_VA = 0xFFFF_8000_0000_0000  # 1G-aligned, inside TTBR1's range
SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}


class Rig:
    """DRAM, CPUs, a kernel top-level table (TTBR1) and user ones (TTBR0 per ASID)."""

    def __init__(self, ncpus: int = 1, mem_size: int = 1 << 32, *, poe: bool = True) -> None:
        self.mem = PhysicalMemory(DRAM_BASE, mem_size)
        self.system = Arm64System(self.mem, ncpus, poe=poe)
        self.next_table = DRAM_BASE
        self.next_data = DRAM_BASE + mem_size // 2
        self.ttbr1 = self.alloc_table()
        self.user_roots: dict[int, int] = {1: self.alloc_table()}
        for cpu in self.system.cpus:
            cpu.ttbr1 = self.ttbr1
            cpu.switch_ttbr0(self.user_roots[1], 1)

    @property
    def cpu(self) -> Cpu:
        return self.system.cpus[0]

    def alloc_table(self) -> int:
        pa = self.next_table
        self.next_table += 0x1000
        return pa

    def alloc_data(self, size: int = 0x1000) -> int:
        """A naturally aligned physical range of ``size`` bytes (4K, 2M or 1G)."""
        pa = (self.next_data + size - 1) & ~(size - 1)
        self.next_data = pa + size
        return pa

    def root(self, va: int, asid: int = 1) -> int:
        if va >= KERNEL_VA_START:
            return self.ttbr1
        if asid not in self.user_roots:
            self.user_roots[asid] = self.alloc_table()
        return self.user_roots[asid]

    def slot(self, va: int, level: int, *, asid: int = 1, table_bits: int = 0) -> int:
        """PA of the descriptor for ``va`` at ``level``, creating tables above it.

        ``table_bits`` are ORed into table descriptors created on the way down.
        """
        table = self.root(va, asid)
        for lvl in range(level):
            entry = table + (((va >> SHIFT[lvl]) & 0x1FF) << 3)
            desc = self.mem.read64(entry)
            if not desc & d.VALID:
                desc = d.table_desc(self.alloc_table()) | table_bits
                self.mem.write64(entry, desc)
            table = desc & d.OA_MASK
        return table + (((va >> SHIFT[level]) & 0x1FF) << 3)

    def set(self, va: int, level: int, value: int, *, asid: int = 1) -> int:
        """Write a raw descriptor for ``va`` at ``level``; return its PA."""
        pa = self.slot(va, level, asid=asid)
        self.mem.write64(pa, value)
        return pa

    def map(
        self, va: int, level: int = 3, *, pa: int | None = None, asid: int = 1, **kw: object
    ) -> int:
        """Map ``va`` with a leaf at ``level`` (``leaf_desc`` keywords); return the data PA."""
        if pa is None:
            pa = self.alloc_data(1 << SHIFT[level])
        self.set(va, level, d.leaf_desc(pa, level, **kw), asid=asid)  # type: ignore[arg-type]
        return pa

    def poe_on(self, por_el1: int = 0x7, por_el0: int = 0x7, cpu: Cpu | None = None) -> Cpu:
        """Enable the overlay at both ELs as ``cpu_enable_poe`` does, ending with an ISB."""
        cpu = cpu or self.cpu
        cpu.write_por_el1(por_el1)
        cpu.write_por_el0(por_el0)
        cpu.set_tcr2(poe=True, e0poe=True)
        cpu.isb()
        return cpu
