"""The walk cache: table descriptors of walks that reached a level-3 table, per CPU,
per ASID (user half) or global (kernel half). A hit walks only the last level; the
Arm ARM TLBI rules say what invalidates it (VAE1/VAAE1 for the VA, ASIDE1 for the
ASID, VMALLE1 all; VALE1/VAALE1 need not), and a stale table entry behaves as the
architecture permits: the walk goes on through the table it cached."""

from __future__ import annotations

import pytest

from kpsim.errors import AccessFault
from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.mmu import _STRIP as STRIP
from kpsim.hw.arm64.mmu import walk_entry, walk_entry_wc, walk_to_pte_table

from .rig import KERNEL_VA, USER_VA, Rig

M2 = 1 << 21


def swap_pte_table(rig: Rig, va: int, asid: int = 1) -> int:
    """Point the level-2 entry over ``va`` at a new level-3 table mapping ``va`` to a
    fresh frame holding a marker (a raw write: no TLBI); return the marker."""
    table = rig.alloc_table()
    data = rig.alloc_data()
    rig.mem.write64(table + (((va >> 12) & 0x1FF) << 3), d.leaf_desc(data, 3, ng=va < KERNEL_VA))
    rig.mem.write64(data + (va & 0xFFF), 0xBEEF)
    l2 = rig.slot(va, 2, asid=asid)
    rig.mem.write64(l2, d.table_desc(table))
    return 0xBEEF


def test_walk_entry_wc_gives_what_walk_entry_gives_cold_and_warm() -> None:
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    rig.map(KERNEL_VA + 0x5000, 3, af=False)
    rig.map(KERNEL_VA + (1 << 30), 1)  # a 1G block
    rig.map(KERNEL_VA + (2 << 30), 2)  # a 2M block
    rig.map(USER_VA, 3, user=True, ng=True)
    rig.map(USER_VA + 0x3000, 3, user=True, rdonly=True, ng=True)
    # APTable / PXNTable bits on the table descriptors above a user page
    rig.slot(USER_VA + (4 << 21), 2, table_bits=d.AP_TABLE_RDONLY | d.PXN_TABLE)
    rig.map(USER_VA + (4 << 21) + 0x1000, 3, user=True, ng=True)
    vas = [
        KERNEL_VA,
        KERNEL_VA + 0x1000,  # an empty PTE beside a valid one
        KERNEL_VA + 0x5000,  # Access flag clear
        KERNEL_VA + (1 << 30) + 0x12345000,
        KERNEL_VA + (2 << 30) + 0x7000,
        KERNEL_VA + (3 << 30),  # no level-1 entry
        KERNEL_VA + (1 << 39),  # no level-0 entry
        USER_VA,
        USER_VA + 0x3000,
        USER_VA + (4 << 21) + 0x1000,
        USER_VA + (4 << 21) + 0x2000,
    ]
    for table in (rig.ttbr1, rig.user_roots[1]):
        walks: dict[int, dict[int, tuple[int, int]]] = {}
        for va in vas * 2:  # the second round runs on a warm cache
            assert walk_entry_wc(rig.mem, table, va, walks, 5) == walk_entry(rig.mem, table, va)
        wc = walks[5]
        assert wc  # the control: something was cached
        # only walks that reached a level-3 table are cached (blocks and faults above are
        # not), with that table and the table bits above it
        for key, (pa, strip) in wc.items():
            va = (key << 21) | (0xFFFF << 48 if table == rig.ttbr1 else 0)
            path = walk_to_pte_table(rig.mem, table, va)
            assert path is not None and path == (pa, strip & STRIP)
        want = {(va >> 21) & ((1 << 43) - 1) for va in vas if walk_to_pte_table(rig.mem, table, va)}
        assert {k & ((1 << 43) - 1) for k in wc} == want


def test_a_miss_under_a_cached_table_uses_the_cached_table() -> None:
    """A stale level-2 entry: after only a last-level TLBI the next miss in that 2 MiB
    still walks the old PTE table (permitted); TLBI VAE1 by any VA in it ends that."""
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    old = rig.map(KERNEL_VA + 0x1000, 3)
    rig.mem.write64(old, 0xA)
    cpu = rig.cpu
    cpu.load(KERNEL_VA)  # caches the walk to this PTE table
    assert cpu.tlb.walk_cached(KERNEL_VA + 0x1000, 0) is not None
    marker = swap_pte_table(rig, KERNEL_VA + 0x1000)
    cpu.tlb.invalidate_va(KERNEL_VA + 0x1000, None, last_level=True)  # TLBI VAALE1
    assert cpu.load(KERNEL_VA + 0x1000) == 0xA  # through the cached (old) table
    cpu.tlb.invalidate_va(KERNEL_VA + 0x1000, None, last_level=True)
    cpu.tlbi_va(KERNEL_VA + 0x1F_F000)  # TLBI VAAE1 by another VA of the same 2 MiB
    assert cpu.load(KERNEL_VA + 0x1000) == marker


def test_control_without_a_cached_walk_the_new_table_is_used_at_once() -> None:
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    old = rig.map(KERNEL_VA + 0x1000, 3)
    rig.mem.write64(old, 0xA)
    marker = swap_pte_table(rig, KERNEL_VA + 0x1000)
    assert rig.cpu.tlb.walk_cached(KERNEL_VA, 0) is None
    assert rig.cpu.load(KERNEL_VA + 0x1000) == marker


def _cache_user(rig: Rig, asid: int, va: int) -> None:
    rig.map(va, 3, asid=asid, user=True, ng=True)
    rig.cpu.switch_ttbr0(rig.user_roots[asid], asid)
    rig.cpu.load(va)


def _setup() -> Rig:
    """Walk-cache entries: ASID 1 at USER_VA and USER_VA + 2M, ASID 2 at USER_VA, and
    the kernel at KERNEL_VA."""
    rig = Rig()
    _cache_user(rig, 1, USER_VA)
    _cache_user(rig, 1, USER_VA + M2)
    _cache_user(rig, 2, USER_VA)
    rig.map(KERNEL_VA, 3)
    rig.cpu.load(KERNEL_VA)
    return rig


def _cached(rig: Rig) -> set[str]:
    t = rig.cpu.tlb
    out = set()
    for name, va, tag in (
        ("a1", USER_VA, 2),
        ("b1", USER_VA + M2, 2),
        ("a2", USER_VA, 3),
        ("k", KERNEL_VA, 0),
    ):
        if t.walk_cached(va, tag) is not None:
            out.add(name)
    return out


ALL = {"a1", "b1", "a2", "k"}


def test_setup_caches_every_walk() -> None:
    assert _cached(_setup()) == ALL


@pytest.mark.parametrize(
    ("op", "left"),
    [
        # TLBI VAE1 (ASID 1, one VA): that ASID's entry for that VA only
        (lambda t: t.invalidate_va(USER_VA + 0x5000, 1), {"b1", "a2", "k"}),
        # TLBI VAAE1 (all ASIDs): every ASID's entry for that VA
        (lambda t: t.invalidate_va(USER_VA + 0x5000, None), {"b1", "k"}),
        # TLBI VALE1 / VAALE1: need not touch the walk cache (kept: worst case)
        (lambda t: t.invalidate_va(USER_VA, 1, last_level=True), ALL),
        (lambda t: t.invalidate_va(USER_VA, None, last_level=True), ALL),
        (lambda t: t.invalidate_va(KERNEL_VA, None, last_level=True), ALL),
        # a kernel VA: the global kernel-half entry, whatever ASID is given
        (lambda t: t.invalidate_va(KERNEL_VA + 0x1000, 2), {"a1", "b1", "a2"}),
        # range by VA, non-last-level: entries in range only
        (lambda t: t.invalidate_range(USER_VA + M2, USER_VA + 2 * M2, 1), {"a1", "a2", "k"}),
        (lambda t: t.invalidate_range(USER_VA, USER_VA + 2 * M2, None), {"k"}),
        (lambda t: t.invalidate_range(USER_VA, USER_VA + 2 * M2, 1, last_level=True), ALL),
        (lambda t: t.invalidate_range(KERNEL_VA, KERNEL_VA + 0x1000, None), {"a1", "b1", "a2"}),
        # TLBI ASIDE1: that ASID's entries, not another's nor the kernel's
        (lambda t: t.invalidate_asid(1), {"a2", "k"}),
        (lambda t: t.invalidate_asid(2), {"a1", "b1", "k"}),
        # TLBI VMALLE1: everything
        (lambda t: t.invalidate_all(), set()),
    ],
    ids=[
        "VAE1",
        "VAAE1",
        "VALE1",
        "VAALE1-user",
        "VAALE1-kernel",
        "VAE1-kernel",
        "range-asid",
        "range-all",
        "range-last-level",
        "range-kernel",
        "ASIDE1-1",
        "ASIDE1-2",
        "VMALLE1",
    ],
)
def test_tlbi_rules_for_the_walk_cache(op, left) -> None:
    rig = _setup()
    op(rig.cpu.tlb)
    assert _cached(rig) == left


def test_broadcast_tlbis_reach_every_cpu_walk_cache() -> None:
    rig = Rig(ncpus=2)
    rig.map(KERNEL_VA, 3)
    for cpu in rig.system.cpus:
        cpu.load(KERNEL_VA)
        assert cpu.tlb.walk_cached(KERNEL_VA, 0) is not None
    rig.cpu.tlbi_range(KERNEL_VA, KERNEL_VA + 0x1000)
    assert all(c.tlb.walk_cached(KERNEL_VA, 0) is None for c in rig.system.cpus)
    for cpu in rig.system.cpus:
        cpu.load(KERNEL_VA)
    rig.cpu.tlbi_all()
    assert all(c.tlb.walk_cached(KERNEL_VA, 0) is None for c in rig.system.cpus)


def test_a_hit_reads_only_the_last_level() -> None:
    """With the level 0-2 tables' frames gone from memory, a cached walk still
    translates (it reads only the PTE table); an uncached one faults at level 0."""
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    rig.map(KERNEL_VA + 0x1000, 3)
    cpu = rig.cpu
    cpu.load(KERNEL_VA)
    root = rig.ttbr1
    saved = rig.mem.read64(root + (((KERNEL_VA >> 39) & 0x1FF) << 3))
    rig.mem.write64(root + (((KERNEL_VA >> 39) & 0x1FF) << 3), 0)  # level-0 entry cleared
    cpu.load(KERNEL_VA + 0x1000)  # a TLB miss served by the walk cache
    cpu.tlbi_va(KERNEL_VA + 0x1000)
    with pytest.raises(AccessFault) as exc:
        cpu.load(KERNEL_VA + 0x1000)
    assert exc.value.fault.kind is FaultKind.TRANSLATION and exc.value.fault.level == 0
    rig.mem.write64(root + (((KERNEL_VA >> 39) & 0x1FF) << 3), saved)
