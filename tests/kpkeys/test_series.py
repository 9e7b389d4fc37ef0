"""The ``series`` kernel option: each posting's kpkeys API, allocator, batching guard and
exception return, and what the enter/leave API's skip-if-unchanged saves.

The same operations run on machines that differ only in ``series``; the POR_EL1 writes
and ISBs are read from the simulated CPUs. v8 (set/restore: every switch writes and
synchronises) against enter-leave (``kpkeys_enter_context`` writes nothing when the
register already holds the context's value, and leave is then a no-op).
"""

import pytest

from kpsim.errors import AccessFault, ConfigError
from kpsim.kpkeys.context import kpkeys_enter_context, kpkeys_guard, kpkeys_leave_context
from kpsim.machine import boot
from kpsim.machine.config import MachineConfig
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES, KpkeysState
from kpsim.mm.kpkeys_series import DEFAULT_SERIES, SERIES

DEFAULT, PGTABLES = 0x17, 0x57


def _machine(series, **kw):
    return boot(memory="256M", series=series, **kw)


def _counts(m, cpu=0):
    c = m.hw.cpus[cpu]
    return c.por_writes, c.isbs


def _delta(m, fn, cpu=0):
    w0, i0 = _counts(m, cpu)
    fn()
    w1, i1 = _counts(m, cpu)
    return w1 - w0, i1 - i0


def _a_pte(m):
    """A kernel PTE pointer (of a fresh, keyed PTE table) and its current value."""
    pfn = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    ptep = m.arch.page_to_virt(pfn)
    return ptep, m.arch.read_entry(ptep)


def test_default_series_is_the_newest_and_names_are_checked():
    """The default is enter-leave; an unknown name is a ConfigError naming the choices."""
    assert DEFAULT_SERIES == "enter-leave" and MachineConfig().series == "enter-leave"
    assert set(SERIES) >= {"v6", "v7", "v8", "enter-leave"}
    with pytest.raises(ConfigError, match=r"unknown series 'v9'.*enter-leave"):
        MachineConfig(series="v9")


def test_allocator_follows_the_series():
    """v6: the PBA (noblock on a PTE map); v7/v8: minimal, refused on a block map
    without allow_unsafe_split; enter-leave: minimal on PTE maps, PBA on block maps."""
    assert MachineConfig(series="v6").effective_allocator == "pba"
    assert MachineConfig(series="v6", linear_map="block").effective_allocator == "pba"
    assert MachineConfig(series="v8").effective_allocator == "minimal"
    assert MachineConfig(series="enter-leave", linear_map="block").effective_allocator == "pba"
    with pytest.raises(ConfigError, match="series v7's"):
        boot(memory="256M", series="v7", linear_map="block")
    m = boot(memory="256M", series="v7", linear_map="block", allocator="pba")  # explicit wins
    assert type(m.kpkeys).__name__ == "PkeysBlockAllocator"


def test_nested_guard_costs_one_switch_with_enter_leave():
    """A guarded PTE write inside a PGTABLES guard: v8 switches twice (4 writes, 4 ISBs),
    enter-leave once (the inner enter sees PGTABLES already: 2 writes, 2 ISBs)."""
    got = {}
    for s in ("v8", "enter-leave"):
        m = _machine(s)
        ptep, v = _a_pte(m)

        def nested(m=m, ptep=ptep, v=v):
            with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES):
                m.arch.set_pte(ptep, v)

        got[s] = _delta(m, nested)
        assert m.hw.cpus[0].por_el1 == DEFAULT
    assert got == {"v8": (4, 4), "enter-leave": (2, 2)}
    m = _machine("enter-leave")
    ptep, v = _a_pte(m)
    skipped = m.counters["kpkeys_enter_skipped"]
    with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES):
        m.arch.set_pte(ptep, v)
    assert m.counters["kpkeys_enter_skipped"] - skipped == 1


def test_lazy_section_inside_a_guard_skips_its_switch_with_enter_leave():
    """set_memory_pkey (its pageattr lazy-MMU section and PTE write) called where POR_EL1
    already grants PGTABLES: v8's section switches on entry and exit anyway; under
    enter-leave neither the section nor its write writes the register."""
    got = {}
    for s in ("v8", "enter-leave"):
        m = _machine(s)
        pfn = m.k.page_alloc.alloc_pages(0, 0)

        def keyed_in_guard(m=m, pfn=pfn):
            with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES):
                assert m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 1) == 0

        got[s] = _delta(m, keyed_in_guard)
    # both: the guard's 2 writes + 2 ISBs and the TLB flush's ISB; v8 only: the
    # section's switch and restore (2 writes, 2 ISBs)
    assert got == {"v8": (4, 5), "enter-leave": (2, 3)}


def test_guarded_writes_in_a_lazy_section_cost_nothing_in_either_api():
    """Inside a batched lazy-MMU section task-context writes do not switch: v8 because
    the guard tests TIF_LAZY_MMU, enter-leave because each enter finds PGTABLES (and
    counts the skip). The section itself: 2 writes, 2 ISBs in both."""
    for s in ("v8", "enter-leave"):
        m = _machine(s)
        ptep, v = _a_pte(m)
        skipped0 = m.counters["kpkeys_enter_skipped"]

        def section(m=m, ptep=ptep, v=v):
            m.arch.arch_enter_lazy_mmu_mode()
            for _ in range(5):
                m.arch.set_pte(ptep, v)
            m.arch.arch_leave_lazy_mmu_mode()

        assert _delta(m, section) == (2, 2)
        skipped = m.counters["kpkeys_enter_skipped"] - skipped0
        assert skipped == (5 if s == "enter-leave" else 0)


def test_exception_return_writes_only_when_entry_reset_with_enter_leave():
    """An IRQ taken in the default context: v8's return writes pt_regs::por_el1 back
    anyway (1 write, no ISB), enter-leave's writes nothing. Taken inside a PGTABLES
    guard both reset (write + ISB) and restore (write): 2 writes, 1 ISB."""
    for s, idle_cost in (("v8", (1, 0)), ("enter-leave", (0, 0))):
        m = _machine(s)
        assert _delta(m, lambda m=m: m.arch.interrupt(0, lambda: None)) == idle_cost

        def in_guard(m=m):
            with kpkeys_guard(m.arch, KPKEYS_CTX_PGTABLES):
                w, i = _delta(m, lambda: m.arch.interrupt(0, lambda: None))
                assert (w, i) == (2, 1)
                assert m.hw.cpus[0].por_el1 == PGTABLES

        in_guard()


def test_enter_leave_api_returns_the_state():
    """kpkeys_enter_context: entered_context false (and no write) when POR_EL1 already
    holds the context; leave of such a state writes nothing."""
    m = _machine("enter-leave")
    arch, cpu = m.arch, m.hw.cpus[0]
    st = kpkeys_enter_context(arch, KPKEYS_CTX_PGTABLES)
    assert st == KpkeysState(True, DEFAULT) and cpu.por_el1 == PGTABLES
    w0 = cpu.por_writes
    inner = kpkeys_enter_context(arch, KPKEYS_CTX_PGTABLES)
    assert inner == KpkeysState() and cpu.por_writes == w0
    kpkeys_leave_context(arch, inner)
    assert cpu.por_writes == w0 and cpu.por_el1 == PGTABLES
    kpkeys_leave_context(arch, st)
    assert cpu.por_el1 == DEFAULT and cpu.por_writes == w0 + 1
    m8 = _machine("v8")  # negative control: the set/restore API always writes
    st8 = kpkeys_enter_context(m8.arch, KPKEYS_CTX_PGTABLES)
    w8 = m8.hw.cpus[0].por_writes
    assert kpkeys_enter_context(m8.arch, KPKEYS_CTX_PGTABLES).entered_context
    assert m8.hw.cpus[0].por_writes == w8 + 1
    kpkeys_leave_context(m8.arch, st8)


def _irq_frees_table_in_lazy_section(series, cpu_id=1):
    """A batched lazy section on ``cpu_id``; an IRQ there frees a page table."""
    m = _machine(series)
    victim = m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
    arch = m.arch
    with arch.on_cpu(cpu_id):
        arch.arch_enter_lazy_mmu_mode()
        try:
            arch.interrupt(cpu_id, lambda: m.k.pgtable.free_table(victim))
        finally:
            arch.arch_leave_lazy_mmu_mode()
    return m


def test_v4_batching_faults_on_an_irq_free_in_a_lazy_section():
    """RFC v4's guard skipped the switch whenever TIF_LAZY_MMU was set, so an IRQ that
    frees a page table inside a lazy section faults in set_memory_pkey's PTE write
    (ESR overlay permission fault); v5+ (in_interrupt()) and enter-leave do not."""
    with pytest.raises(AccessFault) as err:
        _irq_frees_table_in_lazy_section("v4")
    assert err.value.fault.overlay and err.value.fault.level == 3
    for s in ("v5", "v6", "v7", "v8", "enter-leave"):
        m = _irq_frees_table_in_lazy_section(s)
        assert m.hw.cpus[1].por_el1 == DEFAULT


def test_series_shows_in_run_machine_line(tmp_path):
    """`kpsim run` prints the series on its kernel line and in --json's machine."""
    from kpsim.cli.run import _machine_line

    cfg = MachineConfig(series="v6").as_dict()
    assert "series v6" in _machine_line(cfg) and cfg["series"] == "v6"
