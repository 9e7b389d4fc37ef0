"""kpkeys page-table protection on x86, enforced by the hw/x86 MMU with IA32_PKRS:
each blocked write has its negative control (the same write with protection off)."""

from __future__ import annotations

import pytest

from kpsim.arch.x86.kpkeys import pkrs_set_kpkeys_context
from kpsim.arch.x86.memory import START_KERNEL_MAP
from kpsim.errors import AccessFault
from kpsim.hw.x86.fault import PF_PK, PF_PROT, PF_WRITE, PageFault
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS
from kpsim.machine.boot import Machine
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES


def boot(**kw: object) -> Machine:
    kw.setdefault("memory", "1G")
    return Machine.boot(arch="x86", **kw)


def store_fault(m: Machine, va: int) -> int:
    """The #PF error code of a plain kernel store at ``va`` on CPU 0, or -1."""
    try:
        m.hw.cpus[0].store(va, 0)
    except AccessFault as exc:
        assert isinstance(exc.fault, PageFault)
        return int(exc.fault.error_code)
    return -1


def a_kernel_table(m: Machine) -> int:
    """A keyed kernel table page (the direct map's PUD table) and its direct-map VA."""
    pud_pa = m.mem.read64(m.arch.swapper_pg_dir + (0x111 << 3)) & ~0xFFF & ((1 << 52) - 1)
    return m.arch.phys_to_virt(pud_pa)


@pytest.mark.parametrize(
    ("linear_map", "allocator"), [("pte", "minimal"), ("block", "pba"), ("block", "reserve")]
)
def test_table_write_at_default_context_faults_with_pk(linear_map: str, allocator: str) -> None:
    """A store to a table page at the default PKRS is a #PF with PK (W, P set)."""
    m = boot(linear_map=linear_map, allocator=allocator)
    va = a_kernel_table(m) + 8 * 500
    assert store_fault(m, va) == PF_PROT | PF_WRITE | PF_PK


def test_table_write_succeeds_without_the_feature() -> None:
    """Control: hardened_pgtables off, the same store goes through."""
    m = boot(linear_map="pte", hardened_pgtables=False)
    assert store_fault(m, a_kernel_table(m) + 8 * 500) == -1


def test_table_write_succeeds_in_the_pgtables_context() -> None:
    """Control: with PKRS in KPKEYS_CTX_PGTABLES (key 1 WD clear) the store succeeds,
    and no TLB flush was needed between the two."""
    m = boot(linear_map="pte")
    va = a_kernel_table(m) + 8 * 500
    cpu = m.hw.cpus[0]
    assert store_fault(m, va) != -1
    cpu.wrmsr(MSR_IA32_PKRS, pkrs_set_kpkeys_context(cpu.pkrs, KPKEYS_CTX_PGTABLES))
    assert store_fault(m, va) == -1


def test_static_pgd_is_protected_through_both_aliases() -> None:
    """init_top_pgt is keyed in the direct map and in the kernel-image alias."""
    m = boot(linear_map="block", allocator="reserve")
    pgd = m.arch.swapper_pg_dir
    entry = 8 * 300  # an unused kernel-half slot
    assert store_fault(m, m.arch.phys_to_virt(pgd) + entry) & PF_PK
    assert store_fault(m, START_KERNEL_MAP + pgd + entry) & PF_PK
    control = Machine.boot(arch="x86", memory="1G", hardened_pgtables=False)
    assert store_fault(control, START_KERNEL_MAP + control.arch.swapper_pg_dir + entry) == -1


def test_guarded_helper_writes_and_restores_pkrs() -> None:
    """set_pud through the guard: the write lands, PKRS is back to its default value,
    and two WRMSRs to IA32_PKRS were made."""
    m = boot(linear_map="pte")
    cpu = m.hw.cpus[0]
    va = a_kernel_table(m) + 8 * 500
    before, writes = cpu.pkrs, cpu.pkrs_writes
    m.arch.set_pud(va, 0x1234_5000 | 0x63)
    assert m.arch.read_entry(va) == 0x1234_5000 | 0x63
    assert cpu.pkrs == before and cpu.pkrs_writes == writes + 2


def test_exception_entry_resets_pkrs_and_return_restores_it() -> None:
    """An interrupt taken in the pgtables context runs its handler at the initial PKRS
    (a table write from it faults), and the return restores the interrupted value."""
    m = boot(linear_map="pte")
    cpu = m.hw.cpus[0]
    va = a_kernel_table(m) + 8 * 500
    open_ = pkrs_set_kpkeys_context(cpu.pkrs, KPKEYS_CTX_PGTABLES)
    cpu.wrmsr(MSR_IA32_PKRS, open_)
    seen: list[int] = []
    m.arch.interrupt(0, lambda: seen.extend([cpu.pkrs, store_fault(m, va)]))
    assert seen == [m.arch.pkrs_init, PF_PROT | PF_WRITE | PF_PK]
    assert cpu.pkrs == open_
    assert store_fault(m, va) == -1  # control: back in the pgtables context


def test_context_switch_saves_and_restores_pkrs() -> None:
    """switch_to saves the outgoing thread's PKRS and loads the incoming one's."""
    from kpsim.arch.x86.kpkeys import ThreadStruct
    from kpsim.mm.sched import Task

    m = boot(linear_map="pte")
    cpu = m.hw.cpus[0]
    idle = m.arch.current()
    other = Task(7, "other", None, ThreadStruct(pkrs=m.arch.pkrs_init))
    open_ = pkrs_set_kpkeys_context(cpu.pkrs, KPKEYS_CTX_PGTABLES)
    cpu.wrmsr(MSR_IA32_PKRS, open_)
    m.arch.switch_to(0, other)
    assert cpu.pkrs == m.arch.pkrs_init
    m.arch.switch_to(0, idle)
    assert cpu.pkrs == open_


@pytest.mark.parametrize("hardened", [True, False])
def test_vmemmap_pmd_entry_write(hardened: bool) -> None:
    """The vmemmap's PMD (2M leaves over struct pages) is a keyed table: a store to its
    entry faults with PK; control: the feature off, the store goes through."""
    m = boot(linear_map="pte", hardened_pgtables=hardened)
    va = m.arch.layout.page_to_virt_struct(4242)
    m.hw.cpus[0].store(va, 1)  # struct page itself is ordinary data
    pud_ptr = m.arch.next_offset(m.arch.pgd_offset_k(va), va, 1)
    pmd_ptr = m.arch.next_offset(pud_ptr, va, 2)
    code = store_fault(m, pmd_ptr)
    assert code == (PF_PROT | PF_WRITE | PF_PK if hardened else -1)
