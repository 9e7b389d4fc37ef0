"""Huge vmalloc below 2 MiB on arm64: 64 KiB contiguous-PTE blocks from order-4 pages
(``arch_vmap_pte_supported_shift``, ``arch_vmap_pte_range_map_size``, ``set_huge_pte_at``)."""

from __future__ import annotations

import pytest

from kpsim.hw.arm64 import descriptors as d
from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import Translation, walk
from kpsim.machine.boot import Machine, boot
from kpsim.machine.config import MachineConfig
from kpsim.mm import vmalloc as vm
from kpsim.mm.gfp import GFP_KERNEL

SZ_64K = 64 << 10
PAGE = 4096


def _machine(hardened: bool = False, batching: bool = True) -> Machine:
    return boot(MachineConfig(memory="256M", hardened_pgtables=hardened, batching=batching))


def _leaves(m: Machine, a: int, nr: int) -> list[Translation]:
    out = []
    for i in range(nr):
        t = walk(m.mem, m.arch.swapper_pg_dir, a + i * PAGE)
        assert isinstance(t, Translation), f"page {i} of {a:#x} not mapped"
        out.append(t)
    return out


@pytest.mark.parametrize("pages", [16, 32, 64, 256])
def test_huge_vmalloc_maps_contiguous_ptes_from_order4_pages(pages: int) -> None:
    """vmalloc_huge of 64 KiB..1 MiB: 64 KiB-aligned area, every entry a level-3 PTE with
    PTE_CONT in naturally aligned runs of 16 over 64 KiB-aligned physical blocks, the
    pages taken as order-4 blocks; every page takes stores through the MMU."""
    m = _machine()
    pa = m.k.page_alloc
    o4 = pa.counters.get("alloc_order_4", 0)
    a = vm.vmalloc(m.k, pages * PAGE, huge=True)
    assert a and a % SZ_64K == 0
    assert pa.counters["alloc_order_4"] - o4 == pages // 16
    leaves = _leaves(m, a, pages)
    for i, t in enumerate(leaves):
        desc = d.Descriptor.decode(t.desc, 3)
        assert t.level == 3 and desc.contiguous, f"page {i}: no PTE_CONT"
        assert ((t.desc_pa >> 3) & 0x1FF) % 16 == i % 16  # runs start at 16-aligned entries
        head = leaves[i - i % 16]
        assert head.page_pa % SZ_64K == 0  # each run maps one 64 KiB-aligned block
        assert t.page_pa == head.page_pa + (i % 16) * PAGE
        assert pa.allocated_block_of(t.page_pa >> 12) == (t.page_pa >> 12, 0)  # split
    cpu = m.hw.cpus[0]
    for i in range(pages):
        cpu.store(a + i * PAGE + 8, 0x1000 + i)
    for i in range(pages):
        assert cpu.load(a + i * PAGE + 8) == 0x1000 + i
    va = vm.find_vmap_area(m.k, a)
    assert va is not None and va.huge and va.nr_pages == pages


def test_vfree_of_huge_vmalloc_unmaps_and_frees_every_page() -> None:
    """vfree clears all 256 contiguous entries and returns every page to the buddy."""
    m = _machine()
    pa = m.k.page_alloc
    a = vm.vmalloc(m.k, 256 * PAGE, huge=True)
    pfns = [t.page_pa >> 12 for t in _leaves(m, a, 256)]
    frees = pa.counters.get("free_order_0", 0)
    vm.vfree(m.k, a)
    assert pa.counters["free_order_0"] - frees == 256  # split pages freed one by one
    for i in range(0, 256 * PAGE, PAGE):
        assert isinstance(walk(m.mem, m.arch.swapper_pg_dir, a + i), Fault)
    assert not any(pa.is_allocated(p) for p in pfns)
    assert all(pa.is_free(p) for p in pfns)
    vm.purge_vmap_area_lazy(m.k)
    assert isinstance(m.hw.cpus[0].try_store(a, 1), Fault)


def test_non_huge_vmalloc_maps_no_contiguous_ptes() -> None:
    """Negative control: the same sizes without VM_ALLOW_HUGE_VMAP map plain PTEs from
    order-0 pages, and a huge request below 64 KiB falls back to them as well."""
    m = _machine()
    pa = m.k.page_alloc
    o4 = pa.counters.get("alloc_order_4", 0)
    for pages, huge in ((256, False), (16, False), (15, True)):
        a = vm.vmalloc(m.k, pages * PAGE, huge=huge)
        for t in _leaves(m, a, pages):
            assert t.level == 3 and not d.Descriptor.decode(t.desc, 3).contiguous
    assert pa.counters.get("alloc_order_4", 0) == o4


def test_huge_size_is_rounded_up_to_64k() -> None:
    """80 KiB with huge: the area is ALIGN(size, 64 KiB), all of it contiguous-mapped."""
    m = _machine()
    a = vm.vmalloc(m.k, 20 * PAGE, huge=True)
    va = vm.find_vmap_area(m.k, a)
    assert va is not None and va.nr_pages == 32 and va.end - va.start == 32 * PAGE + PAGE
    assert all(t.desc & d.CONT for t in _leaves(m, a, 32))


def test_huge_vmalloc_falls_back_to_pages_when_order4_fails() -> None:
    """With no order-4 block left (memory fragmented on purpose), the huge attempt is
    undone and the area is mapped with small pages (the ``fail:`` retry)."""
    m = _machine()
    pa = m.k.page_alloc
    blocks = []
    while (pfn := pa.alloc_pages(GFP_KERNEL, 4)) is not None:
        blocks.append(pfn)
    for pfn in blocks[:12]:  # 12 x 15 free order-0 pages that can never merge back
        pa.split_page(pfn, 4)
        for p in range(pfn + 1, pfn + 16):
            pa.free_pages(p, 0)
    a = vm.vmalloc(m.k, 64 * PAGE, huge=True)
    assert a and m.counters["vmalloc_huge_fallback"] == 1
    assert not any(t.desc & d.CONT for t in _leaves(m, a, 64))


def _map_counts(m: Machine, pages: int, huge: bool) -> tuple[int, int, int]:
    """(POR_EL1 writes, lazy-MMU sections, PTE writes) of mapping ``pages`` a second time
    at the same address (tables already there: only the mapping is counted)."""
    a = vm.vmalloc(m.k, pages * PAGE, huge=huge)
    vm.vfree(m.k, a)
    vm.purge_vmap_area_lazy(m.k)
    cpu = m.hw.cpus[0]
    por, lazy, ptes = cpu.por_writes, m.counters["lazy_mmu_sections"], m.counters["pte_write"]
    b = vm.vmalloc(m.k, pages * PAGE, huge=huge)
    assert b == a
    out = (
        cpu.por_writes - por,
        m.counters["lazy_mmu_sections"] - lazy,
        m.counters["pte_write"] - ptes,
    )
    vm.vfree(m.k, b)
    vm.purge_vmap_area_lazy(m.k)
    return out


def test_guard_switches_batched_per_64k_chunk() -> None:
    """Batching on: each 64 KiB chunk is its own vmap_range_noflush, hence its own
    lazy-MMU section and one POR_EL1 switch pair (16 for 1 MiB); small pages: one."""
    m = _machine(hardened=True, batching=True)
    por, lazy, ptes = _map_counts(m, 256, huge=True)
    assert (por, lazy, ptes) == (2 * 16, 16, 256)
    por, lazy, ptes = _map_counts(m, 256, huge=False)
    assert (por, lazy, ptes) == (2, 1, 256)


def test_guard_switches_per_entry_without_batching() -> None:
    """Batching off: __set_ptes_anysz writes each of the 16 entries through its own
    guarded __set_pte_nosync, so a contiguous block costs 16 switch pairs, as 16 pages."""
    m = _machine(hardened=True, batching=False)
    assert _map_counts(m, 64, huge=True)[::2] == (2 * 64, 64)
    assert _map_counts(m, 64, huge=False)[::2] == (2 * 64, 64)


def test_no_guard_switch_without_hardened_pgtables() -> None:
    """Negative control for the counts: with the feature off no POR_EL1 write at all."""
    m = _machine(hardened=False)
    assert _map_counts(m, 256, huge=True)[0] == 0
