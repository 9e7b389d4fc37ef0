"""The hardware of one x86-64 machine: DRAM and its logical processors.

x86 has no broadcast TLB invalidation: a flush on another CPU is an IPI whose handler
runs INVLPG or reloads CR3 there (Linux ``flush_tlb_kernel_range`` ->
``on_each_cpu``). :meth:`X86System.shootdown` models that: the initiator sends one
IPI to every other CPU (counted ``tlb_shootdown_ipi``), then ``fn`` runs on each CPU,
the initiator included. Every CPU starts in IA-32e mode with 4-level paging, CR0.WP,
EFER.NXE, CR4.PGE and PCIDE (as Linux sets them on a CPU that has them); CR4.PKS is set
by the kernel when it enables PKS.
"""

from __future__ import annotations

from collections.abc import Callable

from kpsim.errors import ConfigError
from kpsim.events import Counters
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86.cpu import CR4_PCIDE, X86Cpu

MAX_CPUS = 256


class X86System:
    __slots__ = ("counters", "cpus", "mem", "pks")

    def __init__(self, mem: PhysicalMemory, ncpus: int, *, pks: bool = True) -> None:
        if not 1 <= ncpus <= MAX_CPUS:
            raise ConfigError(f"cpus must be between 1 and {MAX_CPUS}, got {ncpus}")
        self.mem = mem
        self.counters = Counters()
        self.pks = pks  # CPUID.(EAX=7,ECX=0):ECX[31]: the CPUs implement PKS
        self.cpus = [X86Cpu(mem) for _ in range(ncpus)]
        for c in self.cpus:
            c.mov_cr4(c.cr4 | CR4_PCIDE)

    def shootdown(self, initiator: int, fn: Callable[[X86Cpu], None]) -> None:
        """Run ``fn`` on every CPU: locally on ``initiator``, by IPI on the others."""
        others = len(self.cpus) - 1
        if others:
            self.counters["tlb_shootdown"] += 1
            self.counters["tlb_shootdown_ipi"] += others
        for c in self.cpus:
            fn(c)

    def hw_counters(self) -> dict[str, int]:
        """Counters summed over the CPUs, plus the shootdowns."""
        out: Counters = Counters(self.counters)
        for c in self.cpus:
            for k, v in c.counters().items():
                out[k] += v
        return out.snapshot()
