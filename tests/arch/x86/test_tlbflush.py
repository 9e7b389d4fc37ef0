"""x86 TLB flushing: INVLPG per page up to tlb_single_page_flush_ceiling, a full flush
above it, on every CPU by IPI; and why it matters: a stale translation on another CPU
keeps the old protection key until the flush."""

from __future__ import annotations

from collections.abc import Callable

from kpsim.arch.x86.tlbflush import TLB_SINGLE_PAGE_FLUSH_CEILING
from kpsim.hw.x86.fault import PF_PK
from kpsim.machine.boot import Machine
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL


def test_range_flush_is_invlpg_per_page_on_every_cpu_up_to_the_ceiling(
    boot_x86: Callable[..., Machine],
) -> None:
    m = boot_x86(cpus=3)
    base = m.arch.page_to_virt(0x10000)
    c0 = m.counters
    m.arch.flush_tlb_kernel_range(base, base + (TLB_SINGLE_PAGE_FLUSH_CEILING << 12))
    c1 = m.counters
    assert c1["invlpg"] - c0["invlpg"] == 3 * TLB_SINGLE_PAGE_FLUSH_CEILING
    assert c1["tlb_shootdown_ipi"] - c0["tlb_shootdown_ipi"] == 2
    assert c1["tlb_flush_all"] == c0["tlb_flush_all"]
    m.arch.flush_tlb_kernel_range(base, base + ((TLB_SINGLE_PAGE_FLUSH_CEILING + 1) << 12))
    c2 = m.counters
    assert c2["invlpg"] == c1["invlpg"]  # above the ceiling: one full flush per CPU
    assert c2["invpcid"] - c1["invpcid"] == 3
    assert c2["tlb_flush_all"] - c1["tlb_flush_all"] == 1


def test_set_memory_pkey_reaches_a_stale_tlb_on_another_cpu(
    boot_x86: Callable[..., Machine], store_error_code: Callable[[Machine, int, int, int], int]
) -> None:
    """CPU 1 caches a direct-map page; CPU 0 keys it; CPU 1's next store faults with PK
    because cpa_flush shot its entry down. Control: without the flush the stale entry
    (key 0) lets the store through."""
    for flush in (True, False):
        m = boot_x86(cpus=2)
        pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        assert pfn is not None
        va = m.arch.page_to_virt(pfn)
        m.hw.cpus[1].store(va, 1)  # CPU 1 caches the translation
        if not flush:
            m.arch.cpa_flush = lambda start, n: None  # type: ignore[method-assign]
        assert m.arch.set_memory_pkey(va, 1, 1) == 0
        assert bool(store_error_code(m, 1, va, 2) & PF_PK) is flush


def test_guarded_writes_cost_two_wrmsr_each_and_a_lazy_section_batches_them(
    boot_x86: Callable[..., Machine],
) -> None:
    """n guarded PTE stores: 2n WRMSRs to IA32_PKRS outside a lazy-MMU section, 2 for
    the whole section inside one."""
    m = boot_x86(cpus=1)
    cpu = m.hw.cpus[0]
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    assert pfn is not None
    n0 = cpu.pkrs_writes
    m.arch.pt_store_batch(pfn << 12, slice(0, 8), 0)
    assert cpu.pkrs_writes - n0 == 16
    n1 = cpu.pkrs_writes
    m.arch.arch_enter_lazy_mmu_mode()
    m.arch.pt_store_batch(pfn << 12, slice(0, 8), 0)
    m.arch.pt_store(m.arch.page_to_virt(pfn) + 8 * 9, 0)
    m.arch.arch_leave_lazy_mmu_mode()
    assert cpu.pkrs_writes - n1 == 2
