"""Smoke test of the hardware model's store path (full suite in tests/hw)."""

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.system import Arm64System
from kpsim.hw.physmem import PhysicalMemory


def test_overlay_write_fault_matches_esr_from_series():
    """A write to a pkey-1 page in the default context reports ESR 0x000000409600004f."""
    mem = PhysicalMemory(0x4000_0000, 1 << 24)
    cpu = Arm64System(mem, 1).cpus[0]
    base = 0x4000_0000
    mem.write64(base, d.table_desc(base + 0x1000))
    mem.write64(base + 0x1000, d.table_desc(base + 0x2000))
    mem.write64(base + 0x2000, d.table_desc(base + 0x3000))
    mem.write64(base + 0x3000, d.leaf_desc(base + 0x10000, 3, poindex=1))
    cpu.switch_ttbr0(base, 1)
    cpu.set_tcr2(poe=True, e0poe=True)
    cpu.write_por_el1(0x17)
    cpu.isb()
    with pytest.raises(AccessFault) as exc:
        cpu.store(0x0, 1)
    assert exc.value.fault.esr == 0x000000409600004F
    cpu.write_por_el1(0x57)
    cpu.isb()
    cpu.store(0x0, 1)
    assert cpu.load(0x0) == 1
