"""The audit's invariants: clean after a real workload, and each one catches the
corruption it is about (negative controls: the same check on a clean machine passes)."""

import pytest

from kpsim.arch.arm64.kpkeys import arch_kpkeys_set_context
from kpsim.audit.invariants import address_spaces, audit, check_interrupts, linear_pkey
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES
from kpsim.mm.madvise import MADV_HUGEPAGE
from kpsim.mm.process import Process

MiB = 1 << 20


_ANON: list[int] = []  # the busy fixture's anonymous mapping


@pytest.fixture
def busy():
    """A hardened machine with a forked process holding anonymous memory and a THP."""
    m = boot(memory="256M")
    p = Process.create(m, "p")
    a = p.mmap(None, 4 * MiB)
    p.touch_range(a, 4 * MiB, stride=8 * 4096, write=True)
    _ANON[:] = [a]  # (a compiled Process has no __dict__ for ad-hoc attributes)
    h = p.mmap(None, 4 * MiB)
    p.madvise(h, 4 * MiB, MADV_HUGEPAGE)
    p.touch(h, write=True)
    child = p.fork(cpu=1)
    child.touch(a, write=True)
    assert p.mm.thp and child.mm.thp  # deposits exist: the audit must account them
    return m, p, child


def kinds(violations):
    return {v.invariant for v in violations}


def test_clean_machine_with_user_tables_and_thp_deposits(busy):
    """Control: the audit walks every mm (found from the registry) and finds nothing."""
    m, p, child = busy
    owners = {owner for owner, _ in address_spaces(m)}
    assert {"kernel", p.mm.owner, child.mm.owner} <= owners
    assert audit(m) == []


def test_user_table_set_back_to_pkey_0_is_caught(busy):
    m, p, _ = busy
    pte_table = next(iter(p.mm.tables[3].values()))
    assert linear_pkey(m, pte_table) == 1
    m.arch.set_memory_pkey(m.arch.page_to_virt(pte_table), 1, 0)
    found = audit(m)
    assert kinds(found) == {"table-keyed"}
    assert f"{pte_table:#x}" in found[0].detail and p.mm.owner in found[0].detail


def test_deposited_table_set_back_to_pkey_0_is_caught(busy):
    m, p, _ = busy
    deposit = next(iter(p.mm.thp.values()))
    m.arch.set_memory_pkey(m.arch.page_to_virt(deposit), 1, 0)
    found = audit(m)
    assert kinds(found) == {"table-keyed"} and "deposited" in found[0].detail


def test_stray_pkey_1_free_page_is_caught(busy):
    m, _, _ = busy
    pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
    m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 1)
    assert "stray-key" in kinds(audit(m))  # in use, but no table
    m.k.page_alloc.free_pages(pfn, 0)
    found = audit(m)
    assert kinds(found) == {"stray-key"} and "(free)" in found[0].detail


def test_cached_pages_of_a_protected_allocator_are_exempt(busy):
    """A keyed free page is fine when the allocator declares it cached (the PBA's
    protocol), and still reported otherwise; a declared cached page at pkey 0 is not."""
    m, _, _ = busy
    pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
    m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 1)

    class Cache:
        def __init__(self, pfns):
            self.pfns = pfns

        def kpkeys_cached_pfns(self):
            return self.pfns

    real = m.kpkeys
    m.kpkeys = Cache({pfn})
    try:
        assert audit(m) == []
        assert audit(m, cached=[pfn]) == []
        other = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        m.kpkeys = Cache({pfn, other})  # claims a page it never keyed
        assert kinds(audit(m)) == {"table-keyed"}
    finally:
        m.kpkeys = real
    assert kinds(audit(m)) == {"stray-key"}


def test_cpu_left_in_pgtables_context_is_caught(busy):
    m, _, _ = busy
    with m.arch.on_cpu(1):
        m.arch.arch_enter_lazy_mmu_mode()
        assert m.hw.cpus[1].por_el1 == 0x57
        assert audit(m) == []  # control: inside an open section the context is legitimate
        m.arch.arch_leave_lazy_mmu_mode()
    saved = arch_kpkeys_set_context(m.hw.cpus[1], KPKEYS_CTX_PGTABLES)
    found = audit(m)
    assert kinds(found) == {"default-context"} and "cpu1" in found[0].detail
    m.hw.cpus[1].write_por_el1(saved)
    assert audit(m) == []


def test_leftover_lazy_mmu_saved_value_is_caught(busy):
    m, _, _ = busy
    m.arch.current().thread.por_el1_lazy_mmu = 0x17
    assert kinds(audit(m)) == {"default-context"}


def test_metadata_and_registry_disagreements_are_caught(busy):
    m, p, _ = busy
    pmd = next(iter(p.mm.tables[2].values()))
    m.k.page_alloc.memmap.clear_page_table(pmd)
    assert kinds(audit(m)) == {"metadata"}
    m.k.page_alloc.memmap.set_page_table(pmd)
    assert audit(m) == []
    loose = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")  # never linked
    assert kinds(audit(m)) == {"registry"}
    m.k.pgtable.free_table(loose)
    extra = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, p.mm.owner)  # a deposit too many
    found = audit(m)
    assert kinds(found) == {"registry"} and "THP" in found[0].detail
    m.k.pgtable.free_table(extra)
    info = m.k.pgtable.live.pop(pmd)  # a linked table the registry forgot
    assert kinds(audit(m)) >= {"registry"}
    m.k.pgtable.live[pmd] = info
    assert audit(m) == []


def test_stale_tlb_entry_is_caught(busy):
    m, p, _ = busy
    a = _ANON[0]
    p.touch(a, write=True)  # cached in cpu0's TLB under p's ASID
    pte_table = p.mm.tables[3][a >> 21]
    idx = (a >> 12) & 511
    m.mem.write64((pte_table << 12) + 8 * idx, 0)  # cleared behind the TLB's back
    assert "tlb" in kinds(audit(m))


def test_check_interrupts_flags_wrong_contexts(busy):
    m, _, _ = busy

    class Rec:
        cpu = 0
        por_before = 0x57
        por_in_handler = 0x17
        por_after_return = 0x57
        por_at_section_end = 0x17

    assert check_interrupts(m, [Rec()]) == []
    bad = Rec()
    bad.por_in_handler, bad.por_after_return, bad.por_at_section_end = 0x57, 0x17, 0x57
    assert len(check_interrupts(m, [bad])) == 3
