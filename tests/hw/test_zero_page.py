"""Cpu.zero_page (clear_page) equals store_table(va, slice(None), 0): contents, faults,
counters and TLB, whether the frame held data, was never written, or was cached."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault

from .rig import KERNEL_VA, Rig


def _rig(data: bool, primed: bool, poindex: int = 0) -> tuple[Rig, int]:
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    pa = rig.map(KERNEL_VA, 3, poindex=poindex)
    if data:
        rig.mem.write64(pa + 64, 0xDEAD)
    if primed:
        rig.cpu.load(KERNEL_VA)
    return rig, pa


@pytest.mark.parametrize("primed", [False, True])  # TLB miss (walk and fill) or hit
@pytest.mark.parametrize("data", [False, True])  # frame never written, or holding data
def test_zero_page_is_store_table_of_zeros(data: bool, primed: bool) -> None:
    """Same RAM contents, counters and TLB keys as the 512 stores of store_table."""
    out = []
    for fused in (False, True):
        rig, pa = _rig(data, primed)
        if fused:
            rig.cpu.zero_page(KERNEL_VA)
        else:
            rig.cpu.store_table(KERNEL_VA, slice(None), 0)
        keys = sorted(k for k, _ in rig.cpu.tlb.items())
        out.append((rig.mem.read64(pa + 64), rig.cpu.counters(), keys))
    assert out[0] == out[1]
    assert out[1][0] == 0


def test_zero_page_of_a_protected_page_faults_and_keeps_the_data() -> None:
    """pkey 1 is read-only at rest: the clear faults and the data stays (negative
    control: pkey 0 clears)."""
    rig, pa = _rig(True, False, poindex=1)
    with pytest.raises(AccessFault):
        rig.cpu.zero_page(KERNEL_VA)
    assert rig.mem.read64(pa + 64) == 0xDEAD
    rig, pa = _rig(True, False, poindex=0)
    rig.cpu.zero_page(KERNEL_VA)
    assert rig.mem.read64(pa + 64) == 0
