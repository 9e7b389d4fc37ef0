"""The audit on the x86 machine (PKS): what only x86 has, each with its negative
control: a stale TLB entry after a key change without the flush, IA32_PKRS left in the
page-table context, a keyed page reaching the buddy allocator, and ``PKS_INIT_VALUE``
letting the default context write the page-table key."""

from __future__ import annotations

from kpsim.arch.x86.kpkeys import pkrs_set_kpkeys_context
from kpsim.audit.freewatch import FreeWatch
from kpsim.audit.invariants import audit
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS
from kpsim.machine.boot import Machine
from kpsim.mm.gfp import GFP_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KPKEYS_PKEY_PGTABLES


def boot(**kw: object) -> Machine:
    return Machine.boot(arch="x86", memory="512M", cpus=2, **kw)


def kinds(m: Machine) -> set[str]:
    return {v.invariant for v in audit(m)}


def test_booted_x86_machine_audits_clean() -> None:
    """The block-mapped direct map with the PBA: nothing to report."""
    assert audit(boot()) == []


def test_stale_tlb_entry_after_an_unflushed_key_change_is_caught() -> None:
    """CPU 1 caches a direct-map page; CPU 0 keys it without ``cpa_flush``: CPU 1's
    entry is stale (and the page a stray key). Control: with the flush, only the stray
    key remains; undone, the machine audits clean."""
    for flush in (False, True):
        m = boot()
        pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        va = m.arch.page_to_virt(pfn)
        m.hw.cpus[1].store(va, 1)  # CPU 1 caches the translation (key 0)
        real = m.arch.cpa_flush
        if not flush:
            m.arch.cpa_flush = lambda start, n: None
        assert m.arch.set_memory_pkey(va, 1, 1) == 0
        found = audit(m)
        assert ("tlb" in {v.invariant for v in found}) is not flush
        assert any(v.invariant == "tlb" and "cpu1" in v.detail for v in found) is not flush
        m.arch.cpa_flush = real
        assert m.arch.set_memory_pkey(va, 1, 0) == 0
        m.k.page_alloc.free_pages(pfn, 0)
        assert audit(m) == []


def test_pkrs_left_in_the_pgtables_context_is_caught() -> None:
    """A CPU at rest with key 1 writable is a default-context violation; restored,
    clean."""
    m = boot()
    cpu = m.hw.cpus[1]
    init = cpu.pkrs
    cpu.wrmsr(MSR_IA32_PKRS, pkrs_set_kpkeys_context(init, KPKEYS_CTX_PGTABLES))
    found = audit(m)
    assert {v.invariant for v in found} == {"default-context"}
    assert "cpu1 IA32_PKRS" in found[0].detail
    cpu.wrmsr(MSR_IA32_PKRS, init)
    assert audit(m) == []


def test_an_init_value_that_lets_key_1_be_written_is_caught() -> None:
    """``PKS_INIT_VALUE`` must deny writes to the page-table key (WD): with key 1 RW in
    the init value (and every CPU loaded with it) the audit says so; control: the
    shipped value audits clean."""
    m = boot()
    bad = pkrs_set_kpkeys_context(m.arch.pkrs_init, KPKEYS_CTX_PGTABLES)
    assert bad != m.arch.pkrs_init
    good = m.arch.pkrs_init
    m.arch.pkrs_init = bad
    for cpu in m.hw.cpus:
        cpu.wrmsr(MSR_IA32_PKRS, bad)
    found = audit(m)
    assert [v.invariant for v in found] == ["default-context"]
    assert f"key {KPKEYS_PKEY_PGTABLES}" in found[0].detail
    m.arch.pkrs_init = good
    for cpu in m.hw.cpus:
        cpu.wrmsr(MSR_IA32_PKRS, good)
    assert audit(m) == []


def test_free_watch_catches_a_keyed_page_reaching_the_buddy_allocator() -> None:
    """A page freed while its direct-map alias is keyed is a free-keyed violation;
    control: the same page unkeyed first is freed silently."""
    for keyed in (True, False):
        m = boot(linear_map="pte")
        pfn = m.k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        va = m.arch.page_to_virt(pfn)
        assert m.arch.set_memory_pkey(va, 1, 1) == 0
        if not keyed:
            assert m.arch.set_memory_pkey(va, 1, 0) == 0
        with FreeWatch(m) as watch:
            m.k.page_alloc.free_pages(pfn, 0)
        assert [v.invariant for v in watch.violations] == (["free-keyed"] if keyed else [])
