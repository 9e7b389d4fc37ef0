"""hw/x86 TLB: PCID tagging, INVLPG, INVPCID types 0-3, MOV CR3 with and without the
no-flush bit, global pages and CR4.PGE."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.cpu import CR3_NOFLUSH, CR4_PCIDE, CR4_PGE
from kpsim.hw.x86.fault import GeneralProtection

from .rig import KERNEL_VA, USER_VA, Rig

OLD, NEW = 0x5000, 0x6000


def pa_of(r: Rig, va: int) -> int:
    got = r.cpu.translate(va)
    assert isinstance(got, tuple), got
    return got[0]


def stale(r: Rig, va: int, *, g: bool = False, level: int = 1) -> int:
    """Map ``va`` to OLD, cache it, then repoint the entry in RAM to NEW (no flush)."""
    old, new = (OLD, NEW) if level == 1 else (0x20_0000, 0x40_0000)
    epa = r.map(va, old, level, g=g, us=True)
    assert pa_of(r, va) == old
    r.set_entry(epa, e.leaf_entry(new, level, g=g, us=True))
    assert pa_of(r, va) == old  # the TLB still holds the old translation
    return new


def pcid_rig() -> Rig:
    r = Rig()
    r.cpu.mov_cr4(r.cpu.cr4 | CR4_PCIDE)
    r.cpu.mov_cr3(r.pml4 | 1)
    return r


def test_invlpg_drops_the_page() -> None:
    r = Rig()
    new = stale(r, KERNEL_VA)
    other = KERNEL_VA + 0x1000
    r.map(other, 0x7000)
    pa_of(r, other)
    walks = r.cpu.walks
    r.cpu.invlpg(KERNEL_VA)
    assert pa_of(r, KERNEL_VA) == new
    assert pa_of(r, other) == 0x7000 and r.cpu.walks == walks + 1  # the other page stayed


def test_invlpg_anywhere_inside_a_2m_page() -> None:
    r = Rig()
    new = stale(r, KERNEL_VA, level=2)
    r.cpu.invlpg(KERNEL_VA + 0x1F_F000)
    assert pa_of(r, KERNEL_VA) == new


def test_invlpg_drops_global_entries() -> None:
    r = Rig()
    new = stale(r, KERNEL_VA, g=True)
    r.cpu.invlpg(KERNEL_VA)
    assert pa_of(r, KERNEL_VA) == new


def test_mov_cr3_flushes_non_global_keeps_global() -> None:
    r = Rig()
    new_user = stale(r, USER_VA)
    stale(r, KERNEL_VA, g=True)
    r.cpu.mov_cr3(r.pml4)
    assert pa_of(r, USER_VA) == new_user
    assert pa_of(r, KERNEL_VA) == OLD  # global: kept across MOV CR3


def test_pge_toggle_flushes_globals() -> None:
    r = Rig()
    new = stale(r, KERNEL_VA, g=True)
    r.cpu.mov_cr4(r.cpu.cr4 & ~CR4_PGE)
    r.cpu.mov_cr4(r.cpu.cr4 | CR4_PGE)
    assert pa_of(r, KERNEL_VA) == new


def test_pcid_keeps_entries_per_address_space() -> None:
    r = pcid_rig()
    stale(r, USER_VA)  # cached under PCID 1
    r.cpu.mov_cr3(r.pml4 | 2)  # switch to PCID 2: flushes PCID 2 only
    assert pa_of(r, USER_VA) == NEW  # PCID 2 walks afresh
    r.cpu.mov_cr3(r.pml4 | 1 | CR3_NOFLUSH)  # back to 1 without a flush
    assert pa_of(r, USER_VA) == OLD  # PCID 1's stale entry survived
    r.cpu.mov_cr3(r.pml4 | 1)  # without no-flush: PCID 1 flushed
    assert pa_of(r, USER_VA) == NEW


def test_invpcid_type0_one_address_one_pcid() -> None:
    r = pcid_rig()
    stale(r, USER_VA)
    r.cpu.invpcid(0, 2, USER_VA)  # another PCID: nothing for PCID 1
    assert pa_of(r, USER_VA) == OLD
    r.cpu.invpcid(0, 1, USER_VA + 0x1000)  # another page
    assert pa_of(r, USER_VA) == OLD
    r.cpu.invpcid(0, 1, USER_VA)
    assert pa_of(r, USER_VA) == NEW


def test_invpcid_type0_and_1_keep_globals() -> None:
    r = pcid_rig()
    stale(r, KERNEL_VA, g=True)
    r.cpu.invpcid(0, 1, KERNEL_VA)
    r.cpu.invpcid(1, 1)
    assert pa_of(r, KERNEL_VA) == OLD


def test_invpcid_type1_single_context() -> None:
    r = pcid_rig()
    stale(r, USER_VA)
    r.cpu.invpcid(1, 3)
    assert pa_of(r, USER_VA) == OLD
    r.cpu.invpcid(1, 1)
    assert pa_of(r, USER_VA) == NEW


def test_invpcid_type2_all_including_globals() -> None:
    r = pcid_rig()
    new_g = stale(r, KERNEL_VA, g=True)
    new_u = stale(r, USER_VA)
    r.cpu.invpcid(2)
    assert pa_of(r, KERNEL_VA) == new_g and pa_of(r, USER_VA) == new_u


def test_invpcid_type3_all_but_globals() -> None:
    r = pcid_rig()
    stale(r, KERNEL_VA, g=True)
    new_u = stale(r, USER_VA)
    r.cpu.invpcid(3)
    assert pa_of(r, USER_VA) == new_u
    assert pa_of(r, KERNEL_VA) == OLD


@pytest.mark.parametrize(
    ("kind", "pcid", "va"),
    [(4, 0, 0), (1, 0x1000, 0), (0, 1, 0x0000_8000_0000_0000)],
)
def test_invpcid_gp(kind: int, pcid: int, va: int) -> None:
    r = pcid_rig()
    with pytest.raises(AccessFault) as exc:
        r.cpu.invpcid(kind, pcid, va)
    assert isinstance(exc.value.fault, GeneralProtection)


def test_cr3_noflush_needs_pcide_and_pcide_needs_pcid0() -> None:
    r = Rig()
    with pytest.raises(AccessFault):
        r.cpu.mov_cr3(r.pml4 | CR3_NOFLUSH)
    r.cpu.mov_cr3(r.pml4 | 0x8)  # PWT with PCIDE=0
    with pytest.raises(AccessFault):
        r.cpu.mov_cr4(r.cpu.cr4 | CR4_PCIDE)
    r.cpu.mov_cr3(r.pml4)
    r.cpu.mov_cr4(r.cpu.cr4 | CR4_PCIDE)  # control: allowed with CR3[11:0] = 0


def test_clearing_pcide_flushes_everything() -> None:
    r = pcid_rig()
    new = stale(r, KERNEL_VA, g=True)
    r.cpu.mov_cr3(r.pml4)
    r.cpu.mov_cr4(r.cpu.cr4 & ~CR4_PCIDE)
    assert pa_of(r, KERNEL_VA) == new


def test_pkrs_wrmsr_reserved_bits_gp() -> None:
    r = Rig()
    with pytest.raises(AccessFault):
        r.cpu.wrmsr(0x6E1, 1 << 32)
    r.cpu.wrmsr(0x6E1, 0xFFFF_FFFF)
    assert r.cpu.rdmsr(0x6E1) == 0xFFFF_FFFF
