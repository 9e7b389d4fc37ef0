"""Generic vmalloc on x86: mapped PAGE_KERNEL through the preallocated vmalloc PUD
tables, written by the CPU, unmapped by vfree (a later access faults)."""

from __future__ import annotations

import pytest

from kpsim.arch.x86.memory import VMALLOC_START
from kpsim.errors import AccessFault
from kpsim.machine.boot import Machine
from kpsim.mm.vmalloc import vfree, vmalloc


@pytest.mark.parametrize("size", [16 << 12, 4 << 20])
def test_vmalloc_store_then_vfree(size: int) -> None:
    m = Machine.boot(arch="x86", memory="1G")
    pud_tables = m.k.pgtable.count("kernel")["pud"]
    addr = vmalloc(m.k, size)
    assert VMALLOC_START <= addr < VMALLOC_START + (32 << 40)
    cpu = m.hw.cpus[0]
    cpu.store(addr + size - 8, 0x1234)
    assert cpu.load(addr + size - 8) == 0x1234
    assert m.k.pgtable.count("kernel")["pud"] == pud_tables  # preallocated at boot
    vfree(m.k, addr)
    from kpsim.mm.vmalloc import purge_vmap_area_lazy

    purge_vmap_area_lazy(m.k)
    with pytest.raises(AccessFault):
        cpu.load(addr + size - 8)
