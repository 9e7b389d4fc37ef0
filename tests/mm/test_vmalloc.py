"""vmalloc/vfree/vm_map_ram: areas, guard pages, kernel PTE tables, lazy TLB purge."""

from __future__ import annotations

from kpsim.hw.arm64.fault import Fault
from kpsim.hw.arm64.mmu import Translation, walk
from kpsim.machine.boot import Machine, boot
from kpsim.machine.config import MachineConfig
from kpsim.mm import vmalloc as vm
from kpsim.mm.gfp import GFP_KERNEL

SZ_2M = 2 << 20


def _machine(hardened: bool = False) -> Machine:
    return boot(MachineConfig(memory="1G", hardened_pgtables=hardened))


def _mapped(m: Machine, va: int) -> Translation | Fault:
    return walk(m.mem, m.arch.swapper_pg_dir, va)


def test_vmalloc_area_is_usable_through_the_mmu_and_has_a_guard_page() -> None:
    """vmalloc'd pages take stores and loads; the page after the area is unmapped."""
    m = _machine()
    cpu = m.hw.cpus[0]
    a = vm.vmalloc(m.k, 3 * 4096)
    lo, hi = m.arch.vmalloc_range()
    assert lo <= a < hi
    for i in range(3):
        cpu.store(a + i * 4096 + 8, 0x100 + i)
        assert cpu.load(a + i * 4096 + 8) == 0x100 + i
    assert isinstance(_mapped(m, a + 3 * 4096), Fault)
    b = vm.vmalloc(m.k, 4096)
    assert b == a + 4 * 4096  # lowest fit, after the guard page
    assert m.counters["vmalloc_page"] == 4


def test_first_vmalloc_lies_after_the_kernel_image() -> None:
    """The kernel image (vm_area_add_early) is never handed out."""
    m = _machine()
    a = vm.vmalloc(m.k, 4096)
    _lo, hi = m.arch.vmalloc_early_areas()[0]
    assert a >= hi


def test_kernel_pte_table_comes_from_pagetable_alloc() -> None:
    """The first vmalloc outside the image's tables allocates one kernel PTE table."""
    m = _machine()
    before = m.k.pgtable.count("kernel")
    n_alloc = m.counters.get("pgtable_alloc", 0)
    a = vm.vmalloc(m.k, 4096)
    assert m.k.pgtable.count("kernel")["pte"] == before["pte"] + 1
    assert m.counters["pgtable_alloc"] == n_alloc + 1
    t = _mapped(m, a)
    assert isinstance(t, Translation)
    table_pfn = t.desc_pa >> 12
    info = m.k.pgtable.live[table_pfn]
    assert (info.level, info.owner, info.source) == (3, "kernel", "pagetable_alloc")


def test_vfree_clears_ptes_but_keeps_tables_and_defers_the_flush() -> None:
    """vfree unmaps at once, keeps the PTE table, and leaves the TLB entry until purge."""
    m = _machine()
    cpu = m.hw.cpus[0]
    a = vm.vmalloc(m.k, 4096)
    cpu.store(a, 1)
    tables = m.k.pgtable.count("kernel")
    vm.vfree(m.k, a)
    assert isinstance(_mapped(m, a), Fault)
    assert m.k.pgtable.count("kernel") == tables
    assert cpu.try_store(a, 2) is None  # stale TLB entry: lazy flush not yet done
    assert vm.purge_vmap_area_lazy(m.k) == 1
    assert m.counters["vmap_lazy_purge"] == 1
    assert isinstance(cpu.try_store(a, 3), Fault)
    assert m.counters["vfree"] == 1


def test_lazy_purge_runs_once_past_the_threshold_over_the_whole_range() -> None:
    """Past lazy_max_pages one purge flushes every queued area in a single range flush."""
    m = _machine()
    st = vm.vmap_state(m.k)
    assert st.lazy_max == 2 * (32 << 20) // 4096  # fls(2 CPUs) * 32 MiB
    st.lazy_max = 8
    addrs = [vm.vmalloc(m.k, 4 * 4096) for _ in range(3)]
    calls = m.counters.get("tlbi_range_calls", 0)
    vm.vfree(m.k, addrs[0])
    assert m.counters.get("vmap_lazy_purge", 0) == 0
    vm.vfree(m.k, addrs[1])  # 10 lazy pages > 8
    assert m.counters["vmap_lazy_purge"] == 1
    assert m.counters["tlbi_range_calls"] == calls + 1
    assert m.counters["tlbi_va"] >= 10
    assert vm.vmalloc(m.k, 4 * 4096) == addrs[0]  # the purged areas are free again


def test_vmalloc_huge_maps_pmd_blocks() -> None:
    """huge=True maps a 2M-aligned area with level-2 blocks backed by order-9 pages."""
    m = _machine()
    a = vm.vmalloc(m.k, 2 * SZ_2M, huge=True)
    assert a % SZ_2M == 0
    for off in (0, SZ_2M + 4096 * 7):
        t = _mapped(m, a + off)
        assert isinstance(t, Translation) and t.level == 2
    m.hw.cpus[0].store(a + SZ_2M + 8, 42)
    assert m.hw.cpus[0].load(a + SZ_2M + 8) == 42
    vm.vfree(m.k, a)
    assert isinstance(_mapped(m, a), Fault)


def test_vmalloc_small_size_ignores_huge() -> None:
    """huge=True below 64 KiB (arm64 CONT_PTE_SIZE) falls back to plain page mappings."""
    m = _machine()
    a = vm.vmalloc(m.k, 8192, huge=True)
    t = _mapped(m, a)
    assert isinstance(t, Translation) and t.level == 3


def test_vm_map_ram_aliases_existing_pages() -> None:
    """vm_map_ram maps existing frames: a store through the alias shows in the linear map."""
    m = _machine()
    cpu = m.hw.cpus[0]
    pfns = [m.k.page_alloc.alloc_pages(GFP_KERNEL, 0) for _ in range(3)]
    a = vm.vm_map_ram(m.k, pfns)
    cpu.store(a + 2 * 4096 + 16, 0xABC)
    assert cpu.load(m.arch.page_to_virt(pfns[2]) + 16) == 0xABC
    vm.vm_unmap_ram(m.k, a, 3)
    assert isinstance(_mapped(m, a), Fault)
    assert m.k.page_alloc.is_allocated(pfns[0])  # the pages stay the caller's


def test_vmalloc_with_hardened_pgtables_keys_the_new_table() -> None:
    """With kpkeys_hardened_pgtables the new kernel PTE table is mapped with pkey 1."""
    m = _machine(hardened=True)
    a = vm.vmalloc(m.k, 4096)
    m.hw.cpus[0].store(a, 5)
    t = _mapped(m, a)
    assert isinstance(t, Translation)
    alias = _mapped(m, m.arch.phys_to_virt(t.desc_pa & ~0xFFF))
    assert isinstance(alias, Translation) and alias.po_index == 1
