"""TLB staleness: a changed descriptor keeps being used until the right TLBI removes it."""

from __future__ import annotations

import pytest

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.esr import FaultKind
from kpsim.hw.arm64.system import MAX_DVM_OPS

from .rig import KERNEL_VA, USER_VA, Rig

SIZE = {1: 1 << 30, 2: 1 << 21, 3: 1 << 12}


def remap(rig: Rig, va: int, level: int, *, asid: int = 1, **kw: object) -> int:
    """Point the leaf for ``va`` at a fresh frame holding a marker; return the marker."""
    new = rig.alloc_data(SIZE[level])
    rig.set(va, level, d.leaf_desc(new, level, **kw), asid=asid)  # type: ignore[arg-type]
    rig.mem.write64(new + (va & (SIZE[level] - 1)), 0xBEEF)
    return 0xBEEF


def prime(rig: Rig, va: int, value: int = 0xA, cpu_id: int = 0) -> None:
    """Store through ``va`` so that the page holding it is in the TLB."""
    rig.system.cpus[cpu_id].store(va, value)
    assert rig.system.cpus[cpu_id].load(va) == value


def test_tlb_hit_after_first_access():
    """The first access walks; the next ones to the same page hit the TLB."""
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    cpu = rig.cpu
    cpu.store(KERNEL_VA, 1)
    walks = cpu.walks
    for off in range(0, 0x1000, 0x100):
        cpu.store(KERNEL_VA + off, off)
    assert cpu.walks == walks
    c = cpu.counters()
    assert c["walk"] == 1 and c["tlb_miss"] == 1 and c["tlb_hit"] == 16


def test_changed_page_descriptor_is_stale_until_tlbi_va():
    """A remapped 4K page keeps its old translation until TLBI by its VA."""
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    prime(rig, KERNEL_VA)
    marker = remap(rig, KERNEL_VA, 3)
    assert rig.cpu.load(KERNEL_VA) == 0xA  # stale
    rig.cpu.tlbi_va(KERNEL_VA + 0x1000)  # another page: still stale
    assert rig.cpu.load(KERNEL_VA) == 0xA
    rig.cpu.tlbi_va(KERNEL_VA + 0x800)
    assert rig.cpu.load(KERNEL_VA) == marker


def test_cleared_descriptor_keeps_translating_until_tlbi():
    """An unmapped page is still reachable through the TLB until the TLBI."""
    rig = Rig()
    rig.map(KERNEL_VA, 3)
    prime(rig, KERNEL_VA)
    rig.set(KERNEL_VA, 3, 0)
    assert rig.cpu.try_store(KERNEL_VA, 2) is None
    rig.cpu.tlbi_va(KERNEL_VA)
    f = rig.cpu.try_store(KERNEL_VA, 3)
    assert f is not None and (f.kind, f.level) == (FaultKind.TRANSLATION, 3)


def test_changed_poindex_needs_a_tlbi_but_por_does_not():
    """set_memory_pkey needs a TLBI: the cached POIndex is used until then."""
    rig = Rig()
    rig.poe_on(por_el1=0x17)
    pa = rig.map(KERNEL_VA, 3, poindex=0)
    prime(rig, KERNEL_VA)
    rig.set(KERNEL_VA, 3, d.leaf_desc(pa, 3, poindex=1))
    assert rig.cpu.try_store(KERNEL_VA, 2) is None  # stale pkey 0
    rig.cpu.tlbi_va(KERNEL_VA)
    assert rig.cpu.try_store(KERNEL_VA, 3).overlay  # type: ignore[union-attr]
    rig.cpu.write_por_el1(0x57)
    rig.cpu.isb()  # no TLBI needed for a POR change
    assert rig.cpu.try_store(KERNEL_VA, 4) is None


@pytest.mark.parametrize("level", [1, 2])
def test_tlbi_by_any_va_inside_a_block_drops_the_whole_block(level):
    """TLBI of a never-accessed page inside a 1G/2M block invalidates the cached block."""
    rig = Rig()
    rig.map(KERNEL_VA, level)
    va = KERNEL_VA + 0x5008
    prime(rig, va)
    marker = remap(rig, va, level)
    rig.cpu.tlbi_va(KERNEL_VA + SIZE[level])  # next block: no effect
    assert rig.cpu.load(va) == 0xA
    rig.cpu.tlbi_va(KERNEL_VA + SIZE[level] - 0x1000)  # last page of the block
    assert rig.cpu.load(va) == marker


@pytest.mark.parametrize("level", [2, 3])
def test_tlbi_by_any_va_inside_a_contiguous_run_drops_the_run(level):
    """TLBI of one entry of a 16-entry contiguous run drops what was cached from the run."""
    rig = Rig()
    size = SIZE[level]
    base = rig.alloc_data(size * 16)
    for i in range(16):
        rig.map(KERNEL_VA + i * size, level, pa=base + i * size, cont=True)
    va = KERNEL_VA + 3 * size + 0x10
    prime(rig, va)
    marker = remap(rig, va, level, cont=True)
    rig.cpu.tlbi_va(KERNEL_VA + 16 * size)  # outside the run
    assert rig.cpu.load(va) == 0xA
    rig.cpu.tlbi_va(KERNEL_VA + 9 * size)
    assert rig.cpu.load(va) == marker


def test_tlbi_of_a_non_contiguous_neighbour_keeps_the_page():
    """Negative control: without the contiguous hint a neighbour's TLBI leaves the page cached."""
    rig = Rig()
    for i in range(16):
        rig.map(KERNEL_VA + i * 0x1000, 3)
    prime(rig, KERNEL_VA + 0x3000)
    remap(rig, KERNEL_VA + 0x3000, 3)
    rig.cpu.tlbi_va(KERNEL_VA + 0x9000)
    assert rig.cpu.load(KERNEL_VA + 0x3000) == 0xA


def two_asids(rig: Rig, *, ng: bool = True) -> tuple[int, int]:
    """Map USER_VA differently under ASIDs 1 and 2 and cache both translations."""
    cpu = rig.cpu
    pas = []
    for asid in (1, 2):
        pas.append(rig.map(USER_VA, 3, asid=asid, ng=ng))
        cpu.switch_ttbr0(rig.user_roots[asid], asid)
        cpu.store(USER_VA, asid)
    return pas[0], pas[1]


def load_as(rig: Rig, asid: int, va: int = USER_VA) -> int:
    rig.cpu.switch_ttbr0(rig.user_roots[asid], asid)
    return rig.cpu.load(va)


def test_non_global_entries_are_tagged_with_the_asid():
    """The same VA under two ASIDs uses two TLB entries; switching TTBR0 needs no flush."""
    rig = Rig()
    pa1, pa2 = two_asids(rig)
    assert (rig.mem.read64(pa1), rig.mem.read64(pa2)) == (1, 2)
    walks = rig.cpu.walks
    assert (load_as(rig, 1), load_as(rig, 2)) == (1, 2)
    assert rig.cpu.walks == walks


def test_tlbi_asid_drops_only_that_asid():
    """TLBI ASIDE1 invalidates one ASID's non-global entries and nothing else."""
    rig = Rig()
    two_asids(rig)
    marker1 = remap(rig, USER_VA, 3, asid=1, ng=True)
    marker2 = remap(rig, USER_VA, 3, asid=2, ng=True)
    rig.cpu.tlbi_asid(2)
    assert (load_as(rig, 1), load_as(rig, 2)) == (1, marker2)
    rig.cpu.tlbi_asid(1)
    assert load_as(rig, 1) == marker1


@pytest.mark.parametrize("asid", [0, 1, 0xFFFF])
def test_tlbi_asid_keeps_global_entries(asid):
    """Global entries (nG = 0), kernel and user, survive TLBI ASIDE1 of any ASID."""
    rig = Rig()
    rig.map(USER_VA, 3)  # global
    rig.map(KERNEL_VA, 3)
    prime(rig, USER_VA)
    prime(rig, KERNEL_VA)
    remap(rig, USER_VA, 3)
    remap(rig, KERNEL_VA, 3)
    rig.cpu.tlbi_asid(asid)
    assert (rig.cpu.load(USER_VA), rig.cpu.load(KERNEL_VA)) == (0xA, 0xA)


def test_asid_0_entries_are_not_global():
    """A non-global entry cached under ASID 0 is not used by another ASID."""
    rig = Rig()
    cpu = rig.cpu
    rig.map(USER_VA, 3, asid=0, ng=True)
    cpu.switch_ttbr0(rig.user_roots[0], 0)
    cpu.store(USER_VA, 0xA)
    rig.map(USER_VA, 3, asid=5, ng=True)
    cpu.switch_ttbr0(rig.user_roots[5], 5)
    assert cpu.load(USER_VA) == 0


def test_asid_0xffff_does_not_alias_the_kernel_half():
    """ASID 0xffff user entries and kernel entries never share a TLB slot."""
    rig = Rig()
    cpu = rig.cpu
    rig.map(KERNEL_VA, 3)
    prime(rig, KERNEL_VA)
    kernel_low = KERNEL_VA & ((1 << 48) - 1)
    rig.map(kernel_low, 3, asid=0xFFFF, ng=True)
    cpu.switch_ttbr0(rig.user_roots[0xFFFF], 0xFFFF)
    assert cpu.load(kernel_low) == 0
    cpu.store(kernel_low, 0xB)
    assert cpu.load(KERNEL_VA) == 0xA
    cpu.tlbi_asid(0xFFFF)
    assert cpu.load(KERNEL_VA) == 0xA
    assert cpu.load(kernel_low) == 0xB


def test_tlbi_va_with_asid_drops_that_asid_and_global_entries():
    """TLBI VAE1 by (VA, ASID) removes that ASID's entry and global ones, not other ASIDs'."""
    rig = Rig()
    two_asids(rig)
    marker1 = remap(rig, USER_VA, 3, asid=1, ng=True)
    remap(rig, USER_VA, 3, asid=2, ng=True)
    rig.cpu.tlbi_va(USER_VA, asid=1)
    assert (load_as(rig, 1), load_as(rig, 2)) == (marker1, 2)


def test_tlbi_va_all_asids_drops_every_asid():
    """TLBI VAAE1 (no ASID) removes the VA's entry under every ASID."""
    rig = Rig()
    two_asids(rig)
    m1 = remap(rig, USER_VA, 3, asid=1, ng=True)
    m2 = remap(rig, USER_VA, 3, asid=2, ng=True)
    rig.cpu.tlbi_va(USER_VA)
    assert (load_as(rig, 1), load_as(rig, 2)) == (m1, m2)


def test_tlbi_va_all_asids_drops_a_non_global_block_by_another_page():
    """TLBI VAAE1 of an uncached page inside a non-global 2M block drops the block."""
    rig = Rig()
    rig.map(USER_VA, 2, ng=True)
    prime(rig, USER_VA + 0x1000)
    marker = remap(rig, USER_VA + 0x1000, 2, ng=True)
    rig.cpu.tlbi_va(USER_VA + 0x10_0000)
    assert rig.cpu.load(USER_VA + 0x1000) == marker


def test_tlbi_all_drops_everything():
    """TLBI VMALLE1 empties the TLB: kernel, global and per-ASID entries."""
    rig = Rig()
    two_asids(rig)
    rig.map(KERNEL_VA, 3)
    prime(rig, KERNEL_VA)
    assert len(rig.cpu.tlb) == 3
    rig.cpu.tlbi_all()
    assert len(rig.cpu.tlb) == 0


@pytest.mark.parametrize("half", [KERNEL_VA, USER_VA])
@pytest.mark.parametrize("cached", [1, 40])  # few entries (scan path) or many (per-page path)
def test_tlbi_range_drops_pages_in_range_only(half, cached):
    """tlbi_range(start, end) invalidates exactly the pages in [start, end)."""
    rig = Rig()
    for i in range(cached):
        rig.map(half + 0x10_0000 + i * 0x1000, 3)
        prime(rig, half + 0x10_0000 + i * 0x1000)
    for i in range(3):
        rig.map(half + i * 0x1000, 3)
        prime(rig, half + i * 0x1000)
        remap(rig, half + i * 0x1000, 3)
    rig.cpu.tlbi_range(half + 0x1000, half + 0x20_000)  # 31 pages, holding pages 1 and 2
    assert [rig.cpu.load(half + i * 0x1000) for i in range(3)] == [0xA, 0xBEEF, 0xBEEF]


@pytest.mark.parametrize("cached", [1, 40])
def test_tlbi_range_over_part_of_a_block_drops_the_block(cached):
    """A range covering uncached pages of a cached 2M block invalidates the block."""
    rig = Rig()
    for i in range(cached - 1):
        rig.map(KERNEL_VA + (1 << 30) + i * 0x1000, 3)
        prime(rig, KERNEL_VA + (1 << 30) + i * 0x1000)
    rig.map(KERNEL_VA, 2)
    prime(rig, KERNEL_VA)
    marker = remap(rig, KERNEL_VA, 2)
    rig.cpu.tlbi_range(KERNEL_VA + 0x10_0000, KERNEL_VA + 0x10_4000)
    assert rig.cpu.load(KERNEL_VA) == marker


def test_tlbi_range_with_asid_keeps_other_asids():
    """A user range flush for one ASID leaves other ASIDs' entries."""
    rig = Rig()
    two_asids(rig)
    m1 = remap(rig, USER_VA, 3, asid=1, ng=True)
    remap(rig, USER_VA, 3, asid=2, ng=True)
    rig.cpu.tlbi_range(USER_VA, USER_VA + 0x4000, asid=1)
    assert (load_as(rig, 1), load_as(rig, 2)) == (m1, 2)


def test_large_tlbi_range_becomes_a_full_flush():
    """Above MAX_DVM_OPS pages, a kernel range flush is one TLBI VMALLE1, as in Linux."""
    rig = Rig()
    rig.map(KERNEL_VA + (1 << 30), 3)
    prime(rig, KERNEL_VA + (1 << 30))
    before = rig.system.hw_counters()
    rig.cpu.tlbi_range(KERNEL_VA, KERNEL_VA + (MAX_DVM_OPS + 1) * 0x1000)
    after = rig.system.hw_counters()
    assert after["tlbi_all"] - before.get("tlbi_all", 0) == 1
    assert len(rig.cpu.tlb) == 0


def test_large_user_tlbi_range_becomes_an_asid_flush():
    """Above MAX_DVM_OPS pages, a user range flush for an ASID is one TLBI ASIDE1."""
    rig = Rig()
    two_asids(rig)
    rig.cpu.tlbi_range(0, (MAX_DVM_OPS + 1) * 0x1000 + USER_VA, asid=2)
    assert rig.system.hw_counters()["tlbi_asid"] == 1
    assert len(rig.cpu.tlb) == 1


def test_tlbi_is_broadcast_to_every_cpu_and_counted_once():
    """A TLBI on one CPU reaches the other CPUs' TLBs (inner-shareable broadcast)."""
    rig = Rig(ncpus=3)
    rig.map(KERNEL_VA, 3)
    for i in range(3):
        prime(rig, KERNEL_VA, cpu_id=i)
    marker = remap(rig, KERNEL_VA, 3)
    assert [c.load(KERNEL_VA) for c in rig.system.cpus] == [0xA] * 3
    rig.system.cpus[2].tlbi_va(KERNEL_VA)
    assert [c.load(KERNEL_VA) for c in rig.system.cpus] == [marker] * 3
    assert rig.system.hw_counters()["tlbi_va"] == 1


def test_each_cpu_caches_on_its_own():
    """A walk on one CPU does not fill another CPU's TLB."""
    rig = Rig(ncpus=2)
    rig.map(KERNEL_VA, 3)
    prime(rig, KERNEL_VA, cpu_id=0)
    marker = remap(rig, KERNEL_VA, 3)
    assert rig.system.cpus[1].load(KERNEL_VA) == marker
    assert rig.system.cpus[0].load(KERNEL_VA) == 0xA


def test_cached_lists_every_entry_with_its_va_and_asid():
    """Tlb.cached() decodes each entry's key into the page VA and its ASID (None if global)."""
    rig = Rig()
    two_asids(rig)  # USER_VA under ASIDs 1 and 2, non-global
    rig.map(USER_VA + 0x1000, 3)  # global user page, in ASID 1's tables
    rig.map(KERNEL_VA + 0x7000, 3)
    load_as(rig, 1)
    prime(rig, USER_VA + 0x1000)
    prime(rig, KERNEL_VA + 0x7000)
    seen = sorted((va, asid) for va, asid, _ in rig.cpu.tlb.cached())
    assert seen == [
        (USER_VA, 1),
        (USER_VA, 2),
        (USER_VA + 0x1000, None),
        (KERNEL_VA + 0x7000, None),
    ]
