"""kpsim explore on x86 (PKS): the explorer's points in the x86 guard (each WRMSR to
IA32_PKRS, the table stores, set_memory_pkey, lazy-MMU entry, the PBA's split protocol),
its checks read through IA32_PKRS, and each protective step with an x86 meaning found
missing when switched off (the negative controls, as tests/engine/test_explore.py does
on arm64). The step without one (the ISB after a POR_EL1 write) is refused.
"""

from __future__ import annotations

import pytest

from kpsim.engine.explore import (
    STEPS,
    STEPS_WITHOUT_MEANING,
    ExploreConfig,
    Explorer,
    explore,
    parse_schedule,
    schedule_text,
)
from kpsim.errors import InputError
from kpsim.machine.config import MachineConfig

BUDGET = 1500
X86_STEPS = sorted(set(STEPS) - set(STEPS_WITHOUT_MEANING["x86"]))
#: the workload where each step's protection is exercised
STEP_WORKLOAD = dict.fromkeys(STEPS, "guarded-paths") | {"reserve-ready-check": "split"}


def cfg(series="enter-leave", disabled=(), workload="guarded-paths", **kw):
    mc = MachineConfig(memory="256M", series=series, arch="x86", **kw)
    return ExploreConfig(mc, workload, frozenset(disabled))


@pytest.fixture(scope="module")
def default_summary():
    return explore(cfg(), BUDGET)


def test_default_x86_configuration_finds_nothing(default_summary):
    """Every step on: no violation over every single injection and a sample of pairs;
    the points are x86's (WRMSR to IA32_PKRS, no ISB), on a 4K direct map."""
    s = default_summary
    assert s.first is None and s.violating == 0 and s.boot_findings == []
    assert s.explored == BUDGET and 1 in s.exhaustive_levels
    for kind in ("pkrs_write:before", "pkrs_write:after", "store:before", "store:after",
                 "set_memory_pkey:before", "set_memory_pkey:after", "lazy:enter"):  # fmt: skip
        assert kind in s.points
    assert not any(p.startswith(("por_write", "isb")) for p in s.points)
    assert s.machine is not None and s.machine.linear_map == "pte"
    assert s.cfg.machine.linear_map == "block"  # x86's default, replaced for the workload


@pytest.mark.parametrize("step", X86_STEPS)
def test_each_disabled_x86_step_yields_a_violation(step):
    """Negative controls on x86: with one protective step off, a violation is found; the
    first is a shortest schedule (at most two injections) and replays to the same."""
    s = explore(cfg(disabled=[step], workload=STEP_WORKLOAD[step]), BUDGET, stop_at_first=True)
    assert s.first is not None, step
    assert len(s.first.schedule) <= 2
    text = schedule_text(s.cfg, s.first.schedule, s.points)
    assert "arch x86\n" in text
    c, sched = parse_schedule(text, "x.sched")
    assert c == s.cfg and sched == s.first.schedule
    again = Explorer(c).run(sched)
    assert [v.check for v in again.violations] == [v.check for v in s.first.violations]


def test_restore_on_return_off_faults_the_interrupted_guard():
    """pks_restore_pt_regs switched off: back from an IRQ taken after a guard's WRMSR,
    the guarded store runs with PKS_INIT_VALUE and takes a #PF with PK set."""
    s = explore(cfg(disabled=["restore-on-return"]), BUDGET, stop_at_first=True)
    assert s.first is not None
    (point, kind), = s.first.schedule  # fmt: skip
    assert kind.startswith("irq") and s.points[point] == "pkrs_write:after"
    v = s.first.violations[0]
    assert v.check == "legitimate-write-faulted" and "protection key" in v.detail


def test_por_save_on_switch_off_lets_the_next_task_write_tables():
    """The PKRS switch in __switch_to off: the next task inherits the PGTABLES value of
    the interrupted guard and its stray store lands (IA32_PKRS named in the detail)."""
    s = explore(cfg(disabled=["por-save-on-switch"]), BUDGET, stop_at_first=True)
    assert s.first is not None and [k for _, k in s.first.schedule] == ["switch"]
    v = s.first.violations[0]
    assert v.check == "unguarded-write-landed" and "IA32_PKRS" in v.detail


def test_split_workload_on_x86_is_clean_and_reaches_the_protocol():
    """The split workload on x86 (PBA on the block-mapped direct map): no violation, and
    the split protocol's and the refill's points are reached inside CPA."""
    s = explore(cfg(workload="split"), 120)
    assert s.first is None
    assert {"split:prepared", "split:locked", "pba:refill", "pba:refilled"} <= set(s.points)


def test_user_workload_on_x86_is_clean():
    """The user-mm paths (fork, zap, free_pgtables) on x86: nothing found by default."""
    assert explore(cfg(workload="user"), 40).first is None


def test_no_hardened_pgtables_is_caught_on_x86():
    """Negative control for the checks themselves: without the feature no table is
    keyed, so an injected context's unguarded write lands."""
    s = explore(cfg(hardened_pgtables=False), 50, stop_at_first=True)
    assert s.first is not None
    assert s.first.violations[0].check == "unguarded-write-landed"


def test_isb_step_is_refused_on_x86_and_accepted_on_arm64():
    """isb-after-por-write has nothing to switch off on x86 (no barrier follows a WRMSR
    to IA32_PKRS): the Explorer and a schedule file refuse it (at its line); arm64
    accepts it (the negative control)."""
    with pytest.raises(InputError, match="no meaning on x86"):
        Explorer(cfg(disabled=["isb-after-por-write"]))
    text = "# kpsim explore schedule\narch x86\n\ndisable isb-after-por-write\n"
    with pytest.raises(InputError) as info:
        parse_schedule(text, "s.sched")
    assert str(info.value).startswith("s.sched:4: disable: step 'isb-after-por-write'")
    c, _ = parse_schedule(text.replace("arch x86", "arch arm64"), "s.sched")
    assert c.disabled == {"isb-after-por-write"} and c.machine.arch == "arm64"


def test_schedule_without_arch_is_arm64_and_bad_arch_is_refused():
    """Older schedule files (no ``arch`` line) replay on arm64; an unknown arch is one
    line at its line number."""
    c, _ = parse_schedule("# kpsim explore schedule\ninject 1 irq-free\n", "s.sched")
    assert c.machine.arch == "arm64"
    with pytest.raises(InputError) as info:
        parse_schedule("# kpsim explore schedule\narch riscv\n", "s.sched")
    assert str(info.value).startswith("s.sched:2: arch: unknown 'riscv'")


def test_v4_batching_bug_and_the_sync_exception_case_on_x86():
    """The series switches find on x86 what they find on arm64: v4's guard faults on an
    IRQ's table free inside a lazy section, v8's on a synchronous exception's table
    allocation there (a #PF with PK); the enter/leave guard is clean against both."""
    for series, kinds in (("v4", ["irq-free"]), ("v8", ["sync-alloc"])):
        s = explore(cfg(series), BUDGET, kinds=kinds, stop_at_first=True)
        assert s.first is not None, series
        (point, _), = s.first.schedule  # fmt: skip
        assert s.points[point] == "lazy:enter"
        v = s.first.violations[0]
        assert v.check == "legitimate-write-faulted" and "protection key" in v.detail
    assert explore(cfg(), 400, kinds=["irq-free", "sync-alloc"]).first is None


def test_a_boot_finding_is_reported_once_and_not_held_against_schedules(monkeypatch):
    """A kernel table left unkeyed by boot itself is reported in ``boot_findings``, and the
    schedules are judged against it; the finding is still there (not repaired), which
    the full audit shows (the negative control)."""
    from kpsim.audit.invariants import audit
    from kpsim.machine.boot import Machine

    real = Machine.boot.__func__

    def boot(klass, config, *args, **kw):
        m = real(klass, config, *args, **kw)
        pfn = max(p for p, t in m.k.pgtable.live.items() if t.owner == "kernel")
        assert m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 0) == 0
        return m

    monkeypatch.setattr(Machine, "boot", classmethod(boot))
    ex = Explorer(cfg())
    assert len(ex.boot_findings) == 1 and ex.boot_findings[0].startswith("table-keyed")
    assert ex.run((), full_audit=True).violations == []
    assert [v.invariant for v in audit(ex.m)] == ["table-keyed"]
    s = explore(cfg(), 60)
    assert s.first is None and s.boot_findings == ex.boot_findings
