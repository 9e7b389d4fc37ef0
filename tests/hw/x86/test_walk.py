"""hw/x86 walker: every level and page size, A/D updates, reserved bits, canonical check."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import PF_PROT, PF_RSVD, PF_WRITE, GeneralProtection, PageFault
from kpsim.hw.x86.mmu import canonical

from .rig import KERNEL_VA, Rig

SIZES = {1: 0x1000, 2: 0x20_0000, 3: 0x4000_0000}


@pytest.mark.parametrize("level", [1, 2, 3])
def test_walk_each_page_size(level: int) -> None:
    r = Rig()
    size = SIZES[level]
    pa = 0x8000_0000  # 1 GiB aligned, so any size fits
    va = KERNEL_VA + 3 * size
    r.map(va, pa, level, rw=True)
    off = size - 8
    r.mem.write64(pa + off, 0x1122334455667788)
    got = r.cpu.translate(va + off)
    assert isinstance(got, tuple)
    assert got[0] == pa + off and got[1].level == level
    assert r.cpu.load(va + off) == 0x1122334455667788
    # the neighbouring page of the same size is not mapped: not-present at that level
    with pytest.raises(AccessFault) as exc:
        r.cpu.load(va + size)
    f = exc.value.fault
    assert isinstance(f, PageFault) and f.error_code == 0 and f.level == level
    assert r.cpu.cr2 == va + size


@pytest.mark.parametrize("level", [4, 3, 2, 1])
def test_not_present_at_each_level(level: int) -> None:
    r = Rig()
    va = KERNEL_VA + 0x1234_5000
    r.map(va, 0x20_0000 if level > 1 else 0x5000, 1)
    epa = r.entry_pa(va, level)
    r.set_entry(epa, r.mem.read64(epa) & ~e.P)
    got = r.cpu.translate(va, write=True)
    assert isinstance(got, PageFault)
    assert got.level == level and got.error_code == PF_WRITE  # P=0, W=1, supervisor


def test_accessed_and_dirty_set_by_hardware() -> None:
    r = Rig()
    va = KERNEL_VA + 0x5000
    epa = r.map(va, 0x5000, accessed=False, dirty=False)
    pml4e = r.entry_pa(va, 4)
    r.set_entry(pml4e, r.mem.read64(pml4e) & ~e.A)
    r.cpu.load(va)
    assert r.mem.read64(epa) & e.A and not r.mem.read64(epa) & e.D
    assert r.mem.read64(pml4e) & e.A
    r.cpu.store(va, 1)  # the TLB entry has D=0: the write walks again and sets D
    assert r.mem.read64(epa) & e.D
    walks = r.cpu.walks
    r.cpu.store(va, 2)
    assert r.cpu.walks == walks  # now a TLB hit


@pytest.mark.parametrize(
    ("level", "bit"),
    [
        (4, e.PS),  # PS in a PML4E is reserved
        (1, 1 << 46),  # above MAXPHYADDR = 46
        (3, 1 << 46),
        (2, 1 << 13),  # the low address bits of a 2 MiB page
        (3, 1 << 20),  # the low address bits of a 1 GiB page
    ],
)
def test_reserved_bits(level: int, bit: int) -> None:
    r = Rig()
    va = KERNEL_VA + 0x4000_0000
    leaf_level = level if level in (2, 3) else 1
    r.map(va, 0x4000_0000, leaf_level)
    epa = r.entry_pa(va, level)
    good = r.mem.read64(epa)
    assert isinstance(r.cpu.translate(va), tuple)  # control: without the bit it maps
    r.cpu.invpcid(2)
    r.set_entry(epa, good | bit)
    got = r.cpu.translate(va)
    assert isinstance(got, PageFault)
    assert got.error_code == PF_PROT | PF_RSVD and got.level == level


def test_nx_reserved_without_nxe() -> None:
    r = Rig()
    va = KERNEL_VA
    r.map(va, 0x5000, nx=True)
    assert isinstance(r.cpu.translate(va), tuple)  # control: NXE=1
    r.cpu.wrmsr(0xC0000080, r.cpu.efer & ~(1 << 11))
    r.cpu.invlpg(va)  # the TLB entry was filled under NXE=1
    got = r.cpu.translate(va)
    assert isinstance(got, PageFault) and got.error_code & PF_RSVD


def test_non_canonical_is_gp() -> None:
    r = Rig()
    assert canonical(KERNEL_VA) and canonical(0x7FFF_FFFF_F000)
    assert not canonical(0x0000_8000_0000_0000) and not canonical(0xFFFF_7FFF_FFFF_F000)
    got = r.cpu.translate(0x0000_8000_0000_0000)
    assert isinstance(got, GeneralProtection)
    with pytest.raises(AccessFault):
        r.cpu.load(0x0000_8000_0000_0000)


def test_walk_reads_ram_not_cache() -> None:
    """A PTE changed in RAM after a TLB fill is not seen until INVLPG."""
    r = Rig()
    va = KERNEL_VA + 0x7000
    epa = r.map(va, 0x5000)
    assert r.cpu.translate(va)[0] == 0x5000  # type: ignore[index]
    r.set_entry(epa, e.leaf_entry(0x6000))
    assert r.cpu.translate(va)[0] == 0x5000  # type: ignore[index]  (stale)
    r.cpu.invlpg(va)
    assert r.cpu.translate(va)[0] == 0x6000  # type: ignore[index]
