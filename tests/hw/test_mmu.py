"""The stage-1 table walker and the faults it reports at every level."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import Translation, ttbr_select, walk

from .rig import KERNEL_VA, USER_VA, Rig


def test_ttbr_select_by_top_bits():
    """VA bits 63:48 all zero select TTBR0, all one TTBR1; anything else is non-canonical."""
    assert ttbr_select(0) == 0
    assert ttbr_select((1 << 48) - 1) == 0
    assert ttbr_select(0xFFFF_0000_0000_0000) == 1
    assert ttbr_select((1 << 64) - 1) == 1
    assert ttbr_select(1 << 48) is None
    assert ttbr_select(0xFFFE_FFFF_FFFF_FFFF) is None


@pytest.mark.parametrize(("level", "size"), [(1, 1 << 30), (2, 1 << 21), (3, 1 << 12)])
def test_walk_returns_the_leaf_and_the_offset_inside_it(level, size):
    """A walk ends at the leaf: PA = block base + VA offset, with the leaf's level and PA."""
    rig = Rig()
    pa = rig.map(KERNEL_VA, level, poindex=2)
    va = KERNEL_VA + size - 8
    t = walk(rig.mem, rig.ttbr1, va)
    assert isinstance(t, Translation)
    assert (t.pa, t.level, t.po_index) == (pa + size - 8, level, 2)
    assert t.desc_pa == rig.slot(va, level)
    assert t.desc == rig.mem.read64(t.desc_pa)
    assert t.page_pa == (pa + size - 8) & ~0xFFF


def test_walk_never_writes_memory():
    """The walker only reads: no hardware AF or dirty updates (TCR_EL1.HA/HD = 0)."""
    rig = Rig()
    rig.map(KERNEL_VA, 3, af=False)
    rig.map(KERNEL_VA + 0x1000, 3, rdonly=True, dbm=True)
    before = {pfn: f.copy() for pfn, f in rig.mem.frames.items()}
    for va in (KERNEL_VA, KERNEL_VA + 0x1000):
        for write in (False, True):
            walk(rig.mem, rig.ttbr1, va, write=write)
            rig.cpu.try_store(va, 1)
    assert all((rig.mem.frames[pfn] == f).all() for pfn, f in before.items())


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("el", "write", "esr_base"),
    [
        (1, False, 0x9600_0000),
        (1, True, 0x9600_0040),
        (0, False, 0x9200_0000),
        (0, True, 0x9200_0040),
    ],
)
def test_translation_fault_at_each_level(level, el, write, esr_base):
    """An invalid descriptor at level N is a level-N translation fault (FSC 0b0001LL)."""
    rig = Rig()
    va = USER_VA + 0x3000
    rig.map(va, 3, user=True)
    rig.mem.write64(rig.slot(va, level), 0)  # cut the walk at `level`
    f = rig.cpu.try_store(va, 1, el=el) if write else _load_fault(rig, va, el)
    assert f == Fault(va, FaultKind.TRANSLATION, level, write=write, el=el)
    assert f.esr == esr_base | (0x04 + level)


def _load_fault(rig: Rig, va: int, el: int) -> Fault:
    with pytest.raises(AccessFault) as exc:
        rig.cpu.load(va, el=el)
    return exc.value.fault  # type: ignore[no-any-return]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_access_flag_fault_at_each_leaf_level(level):
    """A leaf with AF = 0 faults with an access flag fault at its level (no hardware AF)."""
    rig = Rig()
    rig.map(KERNEL_VA, level, af=False)
    f = _load_fault(rig, KERNEL_VA + 0x10, 1)
    assert (f.kind, f.level) == (FaultKind.ACCESS_FLAG, level)
    assert f.esr == 0x9600_0008 + level
    assert rig.cpu.try_store(KERNEL_VA, 1).esr == 0x9600_0048 + level  # type: ignore[union-attr]


def test_access_flag_fault_comes_before_permission_fault():
    """AF = 0 on a read-only page reports the access flag fault, not a permission fault."""
    rig = Rig()
    rig.poe_on(por_el1=0x0)
    rig.map(KERNEL_VA, 3, af=False, rdonly=True)
    assert rig.cpu.try_store(KERNEL_VA, 1).kind is FaultKind.ACCESS_FLAG  # type: ignore[union-attr]


def test_level_0_block_is_a_level_0_translation_fault():
    """bits[1:0] = 0b01 at level 0 is reserved with a 4K granule: translation fault, level 0."""
    rig = Rig()
    rig.mem.write64(rig.slot(KERNEL_VA, 0), 0x4000_0000_0000 | 0x401)
    assert _load_fault(rig, KERNEL_VA, 1) == Fault(KERNEL_VA, FaultKind.TRANSLATION, 0)


def test_level_3_with_bit1_clear_is_a_level_3_translation_fault():
    """bits[1:0] = 0b01 at level 3 is reserved: translation fault at level 3."""
    rig = Rig()
    rig.set(KERNEL_VA, 3, d.leaf_desc(rig.alloc_data(), 3) & ~d.TYPE)
    assert _load_fault(rig, KERNEL_VA, 1) == Fault(KERNEL_VA, FaultKind.TRANSLATION, 3)


@pytest.mark.parametrize("va", [1 << 48, 0x8000_0000_0000_0000, 0xFFFE_FFFF_FFFF_F000])
def test_non_canonical_address_is_a_level_0_translation_fault(va):
    """A VA outside both halves faults at level 0 without a walk."""
    rig = Rig()
    walks = rig.cpu.walks
    f = rig.cpu.try_store(va, 1)
    assert f == Fault(va, FaultKind.TRANSLATION, 0, write=True)
    assert rig.cpu.walks == walks


def test_non_canonical_address_does_not_alias_a_cached_user_page():
    """A non-canonical VA still faults after the user page with the same low bits is cached."""
    rig = Rig()
    rig.map(0, 3, ng=True)
    rig.cpu.store(0, 7)
    for alias in (1 << 48, 2 << 48, 0x0001_0000_0000_0000 | (rig.cpu.asid << 48)):
        f = rig.cpu.try_store(alias, 1)
        assert f is not None and f.kind is FaultKind.TRANSLATION, hex(alias)
    assert rig.cpu.load(0) == 7


def test_no_ttbr0_is_a_level_0_translation_fault():
    """With TTBR0 unset (a kernel thread), a user address faults at level 0."""
    rig = Rig()
    rig.cpu.switch_ttbr0(None, 0)
    assert _load_fault(rig, USER_VA, 1) == Fault(USER_VA, FaultKind.TRANSLATION, 0)


def test_fetch_translation_fault_is_an_instruction_abort():
    """An instruction fetch from an unmapped VA reports EC 0x21 with a translation FSC."""
    rig = Rig()
    with pytest.raises(AccessFault) as exc:
        rig.cpu.fetch(KERNEL_VA)
    f = exc.value.fault
    assert f.exec and f.esr == 0x8600_0004


def test_fault_counters_by_kind():
    """Every raised fault is counted by kind, overlay faults apart."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    rig.map(KERNEL_VA, 3, poindex=1)
    rig.map(KERNEL_VA + 0x1000, 3, af=False)
    rig.cpu.try_store(KERNEL_VA, 1)
    rig.cpu.try_store(KERNEL_VA + 0x1000, 1)
    rig.cpu.try_store(KERNEL_VA + 0x2000, 1)
    rig.cpu.try_store(KERNEL_VA + 0x2000, 1)
    c = rig.system.hw_counters()
    assert (c["fault_overlay"], c["fault_access_flag"], c["fault_translation"]) == (1, 1, 2)


def test_accesses_of_every_size_are_little_endian():
    """8/16/32/64-bit stores through the MMU land little-endian in RAM."""
    rig = Rig()
    pa = rig.map(KERNEL_VA, 3)
    cpu = rig.cpu
    cpu.store(KERNEL_VA, 0x1122_3344_5566_7788)
    cpu.store(KERNEL_VA + 1, 0xAA, size=1)
    cpu.store(KERNEL_VA + 2, 0xBBCC, size=2)
    cpu.store(KERNEL_VA + 4, 0xDDEE_FF00, size=4)
    assert rig.mem.read64(pa) == 0xDDEE_FF00_BBCC_AA88
    assert cpu.load(KERNEL_VA + 2, size=2) == 0xBBCC
    assert cpu.load(KERNEL_VA + 1, size=1) == 0xAA
    assert cpu.load(KERNEL_VA + 4, size=4) == 0xDDEE_FF00
    assert rig.mem.read_bytes(pa, 8) == bytes.fromhex("88aaccbb00ffeedd")


def test_store_table_checks_write_once_and_counts_stores():
    """store_table writes a batch into one table page after one permission check."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    pa = rig.map(KERNEL_VA, 3, poindex=1)
    cpu = rig.cpu
    with pytest.raises(AccessFault):
        cpu.store_table(KERNEL_VA, slice(0, 4), 5)
    cpu.write_por_el1(0x57)
    cpu.isb()
    stores = cpu.stores
    assert cpu.store_table(KERNEL_VA, slice(0, 4), 5) == 4
    assert cpu.store_table(KERNEL_VA, [7, 9], [1, 2]) == 2
    assert cpu.stores == stores + 6
    assert [rig.mem.read64(pa + 8 * i) for i in (0, 3, 4, 7, 9)] == [5, 5, 0, 1, 2]
