"""kpkeys_hardened_pgtables: the seed allocator, guarded writes, batching, interrupts."""

import pytest

from kpsim.arch.arm64.kpkeys import por_set_kpkeys_context
from kpsim.audit.invariants import audit
from kpsim.errors import AccessFault, ConfigError
from kpsim.hw.arm64.descriptors import po_index
from kpsim.machine import MachineConfig, boot
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_DEFAULT, KPKEYS_CTX_PGTABLES


def linear_pkey(m, pfn):
    """pkey of a page's linear-map alias, read through the MMU walk."""
    from kpsim.audit.invariants import linear_pkey as lp

    return lp(m, pfn)


def test_por_contexts_match_the_series():
    """The default context is 0x17 and the page-table context 0x57 (spec §2.1)."""
    assert por_set_kpkeys_context(0x7, KPKEYS_CTX_DEFAULT) == 0x17
    assert por_set_kpkeys_context(0x17, KPKEYS_CTX_PGTABLES) == 0x57
    assert por_set_kpkeys_context(0x3057, KPKEYS_CTX_DEFAULT) == 0x3017  # other keys kept


@pytest.mark.parametrize("hardened", [True, False])
def test_pagetable_alloc_keys_and_free_restores(hardened):
    """A table page gets pkey 1 on allocation and pkey 0 again before reaching the buddy."""
    m = boot(memory="512M", hardened_pgtables=hardened)
    before = m.counters["set_memory_pkey"]
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    assert linear_pkey(m, pfn) == (1 if hardened else 0)
    m.k.pgtable.free_table(pfn)
    assert linear_pkey(m, pfn) == 0
    assert m.k.page_alloc.is_free(pfn)
    assert m.counters["set_memory_pkey"] - before == (2 if hardened else 0)


@pytest.mark.parametrize("hardened", [True, False])
def test_stray_write_to_table_faults_only_when_protected(hardened):
    """A default-context store to a table page faults with the overlay bit; control lands."""
    m = boot(memory="512M", hardened_pgtables=hardened)
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    va = m.arch.page_to_virt(pfn)
    if hardened:
        with pytest.raises(AccessFault) as exc:
            m.hw.cpus[1].store(va, 0xDEAD)
        assert exc.value.fault.overlay and exc.value.fault.write
    else:
        m.hw.cpus[1].store(va, 0xDEAD)
        assert m.mem.read64(pfn << 12) == 0xDEAD


def test_guarded_write_switches_twice_without_batching():
    """Each guarded write outside a lazy section costs 2 POR_EL1 writes and 2 ISBs."""
    m = boot(memory="512M", batching=False)
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    c0 = m.counters
    m.arch.set_pte(m.arch.page_to_virt(pfn), 0x1234)
    c1 = m.counters
    assert c1["por_write"] - c0["por_write"] == 2
    assert c1["isb"] - c0["isb"] == 2


@pytest.mark.parametrize("batching,expected", [(True, 2), (False, 2 * 16)])
def test_lazy_section_batches_switches(batching, expected):
    """16 writes inside one lazy-MMU section switch twice when batched, 2 per write if not."""
    m = boot(memory="512M", batching=batching)
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    va = m.arch.page_to_virt(pfn)
    c0 = m.counters["por_write"]
    m.arch.arch_enter_lazy_mmu_mode()
    for i in range(16):
        m.arch.set_pte(va + 8 * i, i + 1)
    m.arch.arch_leave_lazy_mmu_mode()
    assert m.counters["por_write"] - c0 == expected
    assert m.hw.cpus[0].por_el1 == m.arch.por_init
    m.k.pgtable.free_table(pfn)
    assert not audit(m)


def test_interrupt_freeing_table_inside_batched_section():
    """An IRQ that frees a table mid-section neither faults nor leaves the wrong context."""
    m = boot(memory="512M", batching=True)
    victim = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    work = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    seen = {}

    def handler():
        seen["por_in_handler"] = m.hw.cpus[0].por_el1
        m.k.pgtable.free_table(victim)

    fired = []

    def hook():
        if not fired:
            fired.append(1)
            m.arch.interrupt(0, handler)

    m.arch.arch_enter_lazy_mmu_mode()
    m.arch.irq_hook = hook
    m.arch.set_pte(m.arch.page_to_virt(work), 1)
    m.arch.irq_hook = None
    assert m.hw.cpus[0].por_el1 == 0x57  # still batched after the handler returned
    m.arch.set_pte(m.arch.page_to_virt(work) + 8, 2)
    m.arch.arch_leave_lazy_mmu_mode()
    assert seen["por_in_handler"] == 0x17  # handler ran in the default context
    assert linear_pkey(m, victim) == 0 and m.k.page_alloc.is_free(victim)
    assert m.hw.cpus[0].por_el1 == 0x17
    m.k.pgtable.free_table(work)
    assert not audit(m)


def test_lazy_section_enters_and_leaves_the_pgtables_context():
    """A batched section holds the PGTABLES context (so an IRQ entry must reset it; see
    test_irq_in_batched_section.py for the negative controls)."""
    m = boot(memory="512M", batching=True)
    m.arch.arch_enter_lazy_mmu_mode()
    assert m.hw.cpus[0].por_el1 == 0x57
    m.arch.arch_leave_lazy_mmu_mode()
    assert m.hw.cpus[0].por_el1 == 0x17


def test_minimal_allocator_refuses_block_linear_map():
    """Boot refuses the seed allocator on a block-mapped linear map unless told otherwise."""
    with pytest.raises(ConfigError, match="PTE-mapped"):
        boot(memory="1G", linear_map="block", allocator="minimal")


def test_unsafe_split_leaves_unprotected_table_that_audit_reports():
    """With --allow-unsafe-split the recursion is detected, WARNed and reported by the audit."""
    m = boot(
        MachineConfig(
            memory=1 << 30, linear_map="block", allocator="minimal", allow_unsafe_split=True
        )
    )
    assert any(w.function == "kpkeys_pgtable_alloc" for w in m.k.warnings)
    problems = audit(m)
    assert any(v.invariant == "table-keyed" for v in problems)


def test_pte_machine_boot_audit_clean_and_early_tables_keyed():
    """After boot every kernel table but swapper_pg_dir carries pkey 1 (PPA and static)."""
    m = boot(memory="1G")
    assert not audit(m)
    swapper = m.arch.swapper_pg_dir >> 12
    for pfn, info in m.k.pgtable.live.items():
        assert linear_pkey(m, pfn) == (0 if pfn == swapper else 1), info


def test_no_poe_degrades_to_noops():
    """Without POE, set_memory_pkey is a no-op returning 0 and nothing is keyed."""
    m = boot(memory="512M", poe=False)
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    assert m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 1) == 0
    assert linear_pkey(m, pfn) == 0
    assert m.counters.get("por_write", 0) == 0


def test_set_memory_pkey_rejects_bad_arguments():
    """-EINVAL for a pkey >= 8 or an address outside the linear map."""
    m = boot(memory="512M")
    va = m.arch.page_to_virt(m.mem.base >> 12)
    assert m.arch.set_memory_pkey(va, 1, 8) == -22
    assert m.arch.set_memory_pkey(0x1000, 1, 1) == -22


def test_decoded_leaf_of_keyed_table_has_poindex_1():
    """The linear-map PTE of a table page has bit 60 set (POIndex 1)."""
    m = boot(memory="512M")
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    from kpsim.hw.arm64.mmu import walk

    t = walk(m.mem, m.arch.swapper_pg_dir, m.arch.page_to_virt(pfn))
    assert po_index(t.desc) == 1 and t.desc >> 60 & 1
