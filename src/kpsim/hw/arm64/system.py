"""The hardware of one machine: DRAM and the CPUs of one inner-shareable domain.

TLB maintenance instructions with the ``IS`` suffix (what Linux uses for kernel and
user flushes on SMP) are broadcast here to every CPU's TLB and counted once per
instruction, as a DVM message would be.
"""

from __future__ import annotations

from typing import Final

from kpsim.errors import ConfigError
from kpsim.events import Counters
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.physmem import PhysicalMemory

MAX_CPUS: Final = 256
MAX_DVM_OPS: Final = 512  # Linux's threshold above which a range flush becomes a full flush


class Arm64System:
    __slots__ = ("counters", "cpus", "mem")

    def __init__(self, mem: PhysicalMemory, ncpus: int, *, poe: bool = True) -> None:
        if not 1 <= ncpus <= MAX_CPUS:
            raise ConfigError(f"cpus must be between 1 and {MAX_CPUS}, got {ncpus}")
        self.mem = mem
        self.counters = Counters()
        self.cpus = [Cpu(i, self, poe=poe) for i in range(ncpus)]

    def tlbi_va(self, va: int, asid: int | None = None) -> None:
        self.counters["tlbi_va"] += 1
        for c in self.cpus:
            c.tlb.invalidate_va(va, asid)

    def tlbi_range(self, start: int, end: int, asid: int | None = None) -> None:
        """Invalidate [start, end): one TLBI per page, or one full flush when larger
        than ``MAX_DVM_OPS`` pages, as ``__flush_tlb_range``/``flush_tlb_kernel_range``."""
        npages = (end - start + 0xFFF) >> 12
        if npages > MAX_DVM_OPS:
            if asid is None:
                self.tlbi_all()
            else:
                self.tlbi_asid(asid)
            return
        self.counters["tlbi_va"] += npages
        self.counters["tlbi_range_calls"] += 1
        for c in self.cpus:
            c.tlb.invalidate_range(start, end, asid)

    def tlbi_asid(self, asid: int) -> None:
        self.counters["tlbi_asid"] += 1
        for c in self.cpus:
            c.tlb.invalidate_asid(asid)

    def tlbi_all(self) -> None:
        self.counters["tlbi_all"] += 1
        for c in self.cpus:
            c.tlb.invalidate_all()

    def hw_counters(self) -> dict[str, int]:
        """Counters summed over the CPUs, plus the broadcast TLBIs."""
        out: Counters = Counters(self.counters)
        for c in self.cpus:
            for k, v in c.counters().items():
                out[k] += v
        out["tlbi"] = out["tlbi_va"] + out["tlbi_asid"] + out["tlbi_all"]
        return out.snapshot()
