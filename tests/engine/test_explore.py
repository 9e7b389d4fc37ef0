"""kpsim explore: schedules of injected IRQs, exceptions, context switches and the other
CPU inside guarded page-table paths, checked through the simulated hardware.

The default configuration (every protective step on) yields no violation over the
budget (the >= 10^5 judgement is benchmarks/bench_explore.py's and docs/explore.md's);
each step switched off yields one, with a short replayable schedule (the negative
controls); RFC v4's batching rule is found from the series switch alone.
"""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main
from kpsim.engine.explore import (
    STEPS,
    ExploreConfig,
    Explorer,
    explore,
    parse_schedule,
    schedule_text,
)
from kpsim.errors import InputError
from kpsim.machine.config import MachineConfig

BUDGET = 1500


def cfg(series="enter-leave", disabled=(), workload="guarded-paths", **kw):
    return ExploreConfig(MachineConfig(memory="256M", series=series, **kw), workload,
                         frozenset(disabled))  # fmt: skip


#: the workload where each step's protection is exercised
STEP_WORKLOAD = dict.fromkeys(STEPS, "guarded-paths") | {"reserve-ready-check": "split"}


@pytest.fixture(scope="module")
def default_summary():
    return explore(cfg(), BUDGET)


def test_default_configuration_finds_nothing(default_summary):
    """Every step on: no violation over the whole single-injection level and a sample
    of pairs; the points cover POR writes, ISBs, stores and set_memory_pkey."""
    s = default_summary
    assert s.first is None and s.violating == 0
    assert s.explored == BUDGET and 1 in s.exhaustive_levels
    for kind in ("por_write:before", "por_write:after", "isb:after", "store:before",
                 "store:after", "set_memory_pkey:before", "lazy:enter"):  # fmt: skip
        assert kind in s.points


@pytest.mark.parametrize("step", sorted(STEPS))
def test_each_disabled_step_yields_a_violation(step):
    """Negative controls: with one protective step off, a violation is found; the
    first is a shortest schedule (at most two injections) and replays to the same."""
    s = explore(cfg(disabled=[step], workload=STEP_WORKLOAD[step]), BUDGET, stop_at_first=True)
    assert s.first is not None, step
    assert len(s.first.schedule) <= 2
    c, sched = parse_schedule(schedule_text(s.cfg, s.first.schedule, s.points), "x.sched")
    assert c == s.cfg and sched == s.first.schedule
    again = Explorer(c).run(sched)
    assert [v.check for v in again.violations] == [v.check for v in s.first.violations]


def test_split_workload_is_clean_with_every_step_on():
    """The split workload (PBA on a block map, cache at its reserve, a foreign split, a
    refill): no violation, and the split protocol's points are reached."""
    s = explore(cfg(workload="split"), 120)
    assert s.first is None
    assert {"split:prepared", "split:locked", "pba:refill", "pba:refilled"} <= set(s.points)


def test_user_workload_clean_by_default_and_v4_found_there_too():
    """The user-mm paths (fork, zap, free_pgtables: micromm.fork and .munmap of 2M): no
    violation with every step on; RFC v4's rule faults there as well."""
    assert explore(cfg(workload="user"), 40).first is None
    s = explore(cfg("v4", workload="user"), 40, kinds=["irq-alloc", "irq-free"])
    assert s.first is not None and s.first.violations[0].check == "legitimate-write-faulted"


def test_v4_batching_bug_is_found_from_the_series_switch_alone():
    """series v4 (no in_interrupt() in the batching guard): an IRQ that frees a page table
    inside a lazy-MMU section faults in set_memory_pkey's write; v5 (the fix) is clean."""
    s = explore(cfg("v4"), BUDGET, stop_at_first=True)
    assert s.first is not None
    assert [k for _, k in s.first.schedule] == ["irq-free"]
    assert s.first.violations[0].check == "legitimate-write-faulted"
    assert "overlay" in s.first.violations[0].detail
    fixed = explore(cfg("v5"), BUDGET, kinds=["irq-free", "irq-alloc"])
    assert fixed.first is None


def test_sync_exception_in_a_lazy_section_faults_under_v8_not_enter_leave():
    """Kevin Brodsky's 2026-05-05 corner case as the model has it: a synchronous EL1
    exception (not in_interrupt()) inside a batched lazy-MMU section whose handler keys
    a new table faults under the v5-v8 guard; the enter/leave guard switches for itself."""
    s = explore(cfg("v8"), BUDGET, kinds=["sync-alloc"], stop_at_first=True)
    assert s.first is not None and s.first.violations[0].check == "legitimate-write-faulted"
    assert explore(cfg(), BUDGET, kinds=["sync-alloc"]).first is None


def test_no_hardened_pgtables_is_caught():
    """Negative control for the checks themselves: without the feature, an injected
    context's unguarded write lands on a table."""
    s = explore(cfg(hardened_pgtables=False), 50, stop_at_first=True)
    assert s.first is not None
    assert s.first.violations[0].check == "unguarded-write-landed"


def test_cli_json_exit_status_and_replay(tmp_path, capsys):
    """--json document; exit 1 and a saved schedule on a violation; --replay reruns it."""
    saved = tmp_path / "v.sched"
    st = main(["explore", "--series", "v4", "--schedules", "1000", "--json", "--save", str(saved)])
    doc = json.loads(capsys.readouterr().out)
    assert st == 1 and doc["status"] == 1 and doc["saved"] == str(saved)
    assert doc["first_violation"]["schedule"][0]["inject"] == "irq-free"
    assert main(["explore", "--replay", str(saved), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["violations"][0]["check"] == "legitimate-write-faulted"
    assert main(["explore", "--schedules", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["first_violation"] is None


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("series v4\n", 1, "not a schedule file"),
        ("# kpsim explore schedule\nseries v9\n", 2, "series: unknown 'v9'"),
        ("# kpsim explore schedule\n\ninject x irq-free\n", 3, "POINT a number"),
        ("# kpsim explore schedule\ninject 3 nmi\n", 2, "unknown injection 'nmi'"),
        ("# kpsim explore schedule\ndisable isb\n", 2, "unknown step 'isb'"),
        ("# kpsim explore schedule\ncpus two\n", 2, "cpus: must be"),
        ("# kpsim explore schedule\nfrobnicate 1\n", 2, "unknown directive"),
    ],
)
def test_malformed_schedule_is_one_line_exit_2(tmp_path, capsys, text, line, problem):
    """A malformed schedule file: one line FILE:LINE: problem on stderr, exit 2."""
    path = tmp_path / "bad.sched"
    path.write_text(text)
    assert main(["explore", "--replay", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:{line}: " in err[0] and problem in err[0], err
    with pytest.raises(InputError):
        parse_schedule(text, str(path))


def test_replay_point_beyond_the_workload_is_refused(tmp_path, capsys):
    """An injection point the workload never reaches is bad input, not a clean result."""
    path = tmp_path / "far.sched"
    path.write_text("# kpsim explore schedule\ninject 99999 irq-free\n")
    assert main(["explore", "--replay", str(path)]) == 2
    assert "reaches only" in capsys.readouterr().err


def test_unknown_disable_step_is_exit_2(capsys):
    """--disable with an unknown step: one line, exit 2."""
    assert main(["explore", "--disable", "isb", "--schedules", "1"]) == 2
    assert "unknown step" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--schedules", "0"], ["--audit-every", "0"], ["--inject", "nmi"]]
)
def test_impossible_options_are_exit_2(capsys, argv):
    """A budget or audit period below 1, an unknown injection: one line, exit 2."""
    assert main(["explore", *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
