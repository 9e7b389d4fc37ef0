"""Cpu.zero_page (clear_page) equals store_table(va, slice(None), 0): contents, faults,
counters and TLB, whether the frame held data, was never written, or was cached."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault

from .rig import KERNEL_VA, Rig

_ALL = slice(None)


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


def test_a_missed_clear_caches_the_alias_without_making_the_frame() -> None:
    """A never-written page cleared through a TLB miss is cached (bulk tier, a later
    load hits and reads zero) and costs no frame; a page holding data is zeroed in
    place (control: the same load without the clear walks again)."""
    rig, pa = _rig(False, False)
    rig.cpu.zero_page(KERNEL_VA)
    assert (pa >> 12) not in rig.mem.frames
    assert rig.cpu.tlb.get(KERNEL_VA >> 12) is not None
    walks = rig.cpu.walks
    assert rig.cpu.load(KERNEL_VA + 64) == 0
    assert rig.cpu.walks == walks  # a hit
    control, _ = _rig(False, False)
    walks = control.cpu.walks
    control.cpu.load(KERNEL_VA + 64)
    assert control.cpu.walks == walks + 1
    rig, pa = _rig(True, False)
    rig.cpu.zero_page(KERNEL_VA)
    assert rig.mem.read64(pa + 64) == 0


def test_a_cleared_alias_left_in_the_bulk_tier_is_stale_until_a_tlbi() -> None:
    """The cached alias outlives a change of its descriptor: a second clear after the
    leaf is made read-only still succeeds from the TLB; after TLBI VAE1 it faults
    (negative control for the flush)."""
    rig, pa = _rig(True, False)
    rig.cpu.zero_page(KERNEL_VA)
    rig.map(KERNEL_VA, 3, pa=pa, rdonly=True)
    rig.mem.write64(pa + 64, 0xBEEF)
    rig.cpu.zero_page(KERNEL_VA)  # stale: still writable
    assert rig.mem.read64(pa + 64) == 0
    rig.mem.write64(pa + 64, 0xBEEF)
    rig.cpu.tlb.invalidate_va(KERNEL_VA, None)
    with pytest.raises(AccessFault):
        rig.cpu.zero_page(KERNEL_VA)
    assert rig.mem.read64(pa + 64) == 0xBEEF


def test_clears_of_pages_with_other_rights_in_one_region_stay_exact() -> None:
    """A read-only and a writable page in one 2 MiB region: the second clear's entry
    cannot join the first's bulk run (other rights) and goes to the dict; counters,
    contents and TLB keys equal store_table's."""
    out = []
    for fused in (False, True):
        rig = Rig()
        rig.poe_on(por_el1=0x17)
        ro = rig.map(KERNEL_VA, 3, rdonly=True)
        rw = rig.map(KERNEL_VA + 0x1000, 3)
        rig.mem.write64(rw + 8, 7)
        for va in (KERNEL_VA, KERNEL_VA + 0x1000):
            try:
                if fused:
                    rig.cpu.zero_page(va)
                else:
                    rig.cpu.store_table(va, _ALL, 0)
            except AccessFault:
                assert va == KERNEL_VA
        keys = sorted((k, e[:6]) for k, e in rig.cpu.tlb.items())
        out.append((rig.mem.read64(ro), rig.mem.read64(rw + 8), rig.cpu.counters(), keys))
    assert out[0] == out[1]
    assert out[1][1] == 0
