"""The TLB-fill walk (walk_entry) and the batched leaf reads agree with the reference walk."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.mmu import Translation, leaf_perms, walk, walk_entry
from kpsim.hw.physmem import PhysicalMemory

DRAM = 0x4000_0000
TABLES = [DRAM + i * 0x1000 for i in range(4)]
BITS = [d.VALID, d.TYPE, d.AP_USER, d.AP_RDONLY, d.AF, d.NG, d.PXN, d.UXN, d.CONT, d.PXN_TABLE]
BITS += [d.UXN_TABLE, d.AP_TABLE_NO_EL0, d.AP_TABLE_RDONLY, 1 << 60, 1 << 62]
desc_bits = st.lists(st.sampled_from(BITS), max_size=10).map(lambda bs: sum(set(bs)))


def build(descs: list[int], va: int) -> PhysicalMemory:
    mem = PhysicalMemory(DRAM, 64 << 20)
    for level, bits in enumerate(descs):
        nxt = TABLES[level + 1] if level < 3 else DRAM + 0x20_0000
        mem.write64(TABLES[level] + 8 * ((va >> d.LEVEL_SHIFT[level]) & 0x1FF), nxt | bits)
    return mem


@settings(max_examples=300, deadline=None)
@given(st.lists(desc_bits, min_size=4, max_size=4), st.integers(0, (1 << 48) - 1))
def test_walk_entry_matches_walk(descs: list[int], va: int) -> None:
    """Same leaf, rights, POIndex and level, or the same fault kind and level."""
    mem = build(descs, va)
    ref = walk(mem, TABLES[0], va)
    got = walk_entry(mem, TABLES[0], va)
    if isinstance(ref, Translation):
        assert got == (ref.page_pa, ref.perm_el1, ref.perm_el0, ref.po_index, ref.level, ref.desc)
    else:
        assert got == int(ref.kind) | ref.level


@settings(max_examples=200, deadline=None)
@given(st.lists(desc_bits, min_size=4, max_size=4), st.integers(0, (1 << 48) - 1))
def test_leaf_perms_matches_walk_at_level_3(descs: list[int], va: int) -> None:
    """The vectorised leaf check gives the walk's answer for a level-3 leaf."""
    descs = [descs[0] | 3, descs[1] | 3, descs[2] | 3, descs[3]]
    mem = build(descs, va)
    ref = walk(mem, TABLES[0], va)
    strip = (descs[0] | descs[1] | descs[2]) & (0xF << 59)
    leaf = DRAM + 0x20_0000 | descs[3]
    ok, el1, el0 = leaf_perms(np.array([leaf], dtype=np.uint64), strip)
    assert bool(ok[0]) == isinstance(ref, Translation)
    if isinstance(ref, Translation):
        assert (int(el1[0]), int(el0[0])) == (ref.perm_el1, ref.perm_el0)


def test_walk_entry_detects_a_difference() -> None:
    """Negative control: a cleared Access flag turns the leaf into an access-flag fault."""
    va = 0x1234_5678_9000
    ok = build([3, 3, 3, 3 | d.AF], va)
    bad = build([3, 3, 3, 3], va)
    assert isinstance(walk_entry(ok, TABLES[0], va), tuple)
    assert walk_entry(bad, TABLES[0], va) == 0x08 | 3
