"""The cost model: defaults, user overrides, estimates and overheads decomposed by event."""

from __future__ import annotations

import math
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpsim.errors import InputError
from kpsim.report.cost import (
    EVENTS,
    STATUSES,
    ZeroBaselineError,
    costs_toml,
    default_costs,
    estimate,
    load_costs,
    overhead,
    overhead_breakdown,
    parse_cost_overrides,
)


def test_defaults_cost_every_machine_counter():
    """Every counter name the machine uses has a default cost with a valid status."""
    costs = default_costs()
    for name in EVENTS:
        assert name in costs, name
        assert costs[name] >= 0
        assert costs.status(name) in STATUSES
    assert costs.status("isb") == "unknown"
    assert costs["other_cycles"] == 1.0


def test_every_default_has_a_one_line_comment():
    """In costs.toml each entry is preceded by a comment saying what it is and its source."""
    text = resources.files("kpsim.report").joinpath("data", "costs.toml").read_text()
    lines = text.splitlines()
    entries = [i for i, line in enumerate(lines) if " = { cycles" in line]
    assert len(entries) == len(default_costs().names)
    costs = default_costs()
    for i in entries:
        comment, name = lines[i - 1], lines[i].split(" = ")[0]
        assert comment.startswith("# "), lines[i]
        if costs.status(name) == "unknown":
            assert "not published" in comment or "never published" in comment, comment


def test_unnamed_counter_costs_nothing():
    """A counter the table does not name costs 0 cycles and adds nothing to the total."""
    costs = default_costs()
    assert costs["memblock_alloc"] == 0.0
    est = estimate({"isb": 3, "memblock_alloc": 1000}, costs)
    assert est.total == pytest.approx(3 * costs["isb"])


def test_estimate_is_counts_times_costs_broken_down_largest_first():
    """The total is the sum of count x cost, and the breakdown lists events by cycles."""
    costs = default_costs()
    counts = {"pte_write": 10, "isb": 2, "pgfault": 1}
    est = estimate(counts, costs)
    parts = {k: n * costs[k] for k, n in counts.items()}
    assert est.total == pytest.approx(sum(parts.values()))
    assert dict(est.breakdown) == pytest.approx(parts)
    assert [name for name, _ in est.top(3)] == sorted(parts, key=lambda k: -parts[k])


def test_overhead_contributions_sum_to_the_percentage():
    """The per-event percentage points of an overhead add up to the overhead itself."""
    costs = default_costs()
    off = {"fork_pte_copy": 512, "pte_write": 1024}
    on = dict(off, por_write=2048, isb=2048, set_memory_pkey=1)
    ov = overhead_breakdown(on, off, costs)
    assert ov.percent == pytest.approx(math.fsum(ov.contributions.values()))
    assert ov.percent == overhead(on, off, costs)
    assert ov.top(1)[0][0] == "isb"
    assert "fork_pte_copy" not in ov.contributions


def test_feature_off_equal_to_on_is_zero_overhead():
    """Identical on and off counts give exactly 0 % and no contributors."""
    counts = {"pte_write": 7, "isb": 2}
    ov = overhead_breakdown(counts, counts, default_costs())
    assert ov.percent == 0.0 and not ov.contributions


def test_zero_cost_baseline_has_no_percentage():
    """An off run that costs nothing cannot give a percentage: ZeroBaselineError."""
    with pytest.raises(ZeroBaselineError):
        overhead({"isb": 1}, {"lazy_mmu_sections": 5}, default_costs())


counts_st = st.dictionaries(
    st.sampled_from(EVENTS), st.integers(min_value=0, max_value=10**6), min_size=1
)


@given(a=counts_st, b=counts_st, event=st.sampled_from(EVENTS),
       new=st.floats(min_value=0.5, max_value=1e4))  # fmt: skip
def test_changing_one_cost_changes_only_figures_that_count_it(a, b, event, new):
    """Changing one event's cost moves an estimate if and only if its counts include that event."""
    costs = default_costs()
    changed = costs.replace({event: costs[event] + new})
    for counts in (a, b):
        before, after = estimate(counts, costs), estimate(counts, changed)
        if counts.get(event, 0):
            assert after.total != before.total
            assert after.breakdown[event] != before.breakdown[event]
        else:
            assert after.total == before.total
            assert dict(after.breakdown) == dict(before.breakdown)


@given(off=counts_st, extra=counts_st, event=st.sampled_from(EVENTS))
def test_overhead_ignores_costs_of_events_neither_run_counts(off, extra, event):
    """An overhead figure does not move when the cost of an event neither run counted changes."""
    costs = default_costs()
    if off.get(event) or extra.get(event) or estimate(off, costs).total == 0:
        return
    on = {k: off.get(k, 0) + extra.get(k, 0) for k in set(off) | set(extra)}
    changed = costs.replace({event: costs[event] * 3 + 7})
    assert overhead(on, off, changed) == overhead(on, off, costs)


def test_override_file_replaces_named_costs(tmp_path):
    """A user [costs] file overrides only the costs it names and marks them 'override'."""
    path = tmp_path / "mine.toml"
    path.write_text("# my machine\n[costs]\nisb = 25\npor_write = { cycles = 3.5 }\n")
    costs = load_costs(path)
    assert costs["isb"] == 25.0 and costs["por_write"] == 3.5
    assert costs.status("isb") == "override"
    assert costs["tlbi_va"] == default_costs()["tlbi_va"]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("[costs]\nisb = 1\nisbb = 2\n", 3, "costs.isbb: unknown event"),
        ('[costs]\n\nisb = "fast"\n', 3, "must be a number of cycles, got string 'fast'"),
        ("[costs]\nisb = true\n", 2, "must be a number of cycles, got bool"),
        ("[costs]\nisb = -4\n", 2, "must be a finite number >= 0"),
        ("[costs]\nisb = nan\n", 2, "must be a finite number >= 0"),
        ("[costs]\nisb = [1]\n", 2, "must be a number of cycles, got list"),
        ("isb = 40\n", 1, "unknown field 'isb'"),
        ("[costs]\nisb = { cycle = 4 }\n", 2, "expected { cycles = N }"),
        ("[costs]\nisb = 4\nisb = 5\n", 3, "TOML syntax"),
        ("[costs]\n\n\npor_write 4\n", 4, "TOML syntax"),
    ],
)
def test_bad_override_names_file_line_and_problem(text, line, needle):
    """A malformed cost file is an InputError naming the file, the line and the problem."""
    with pytest.raises(InputError) as exc:
        parse_cost_overrides(text, "mine.toml")
    assert exc.value.file == "mine.toml"
    assert exc.value.line == line, str(exc.value)
    assert needle in str(exc.value)
    assert str(exc.value).startswith(f"mine.toml:{line}: ")


def test_missing_override_file_is_input_error(tmp_path):
    """A cost file that cannot be read is an InputError naming it, not a traceback."""
    with pytest.raises(InputError, match="cannot read cost file") as exc:
        load_costs(tmp_path / "absent.toml")
    assert exc.value.file.endswith("absent.toml")


def test_costs_toml_round_trips():
    """costs_toml writes a file that parses back to the same costs."""
    costs = default_costs().replace({"isb": 1 / 3, "pte_write": 1e-5})
    text = costs_toml(costs, ["header line"])
    assert text.startswith("# header line\n")
    assert parse_cost_overrides(text, "x.toml") == costs.as_dict()


def test_replace_rejects_unknown_event():
    """Replacing a cost that does not exist is an InputError, never a silent new entry."""
    with pytest.raises(InputError, match="nosuch"):
        default_costs().replace({"nosuch": 1.0})


def test_every_default_says_where_its_number_comes_from():
    """Provenance (issue 13): each default has a source; cited and derived ones name the
    citation or reasoning; every non-definition entry says when it was set against the
    published tables. The control: definitions are exactly the zero-or-one entries."""
    from kpsim.report.cost import SOURCES

    costs = default_costs()
    for name in costs.names:
        e = costs.entries[name]
        assert e.source in SOURCES, name
        if e.source in ("cited", "derived"):
            assert len(e.ref) > 20, name
        if e.status == "definition":
            assert e.source == "definition" and e.cycles in (0.0, 1.0), name
        else:
            assert e.source != "definition" and "published tables" in e.history, name


def test_defaults_with_a_bad_source_are_rejected():
    """The defaults' loader refuses a source outside SOURCES or a missing one (file and
    line); the control: the same entry with a valid source loads."""
    from kpsim.report.cost import parse_defaults

    head = '[costs]\nisb = { cycles = 1, status = "unknown"'
    ok = parse_defaults(head + ', source = "assumed" }\n', "c")
    assert ok.entries["isb"].source == "assumed"
    with pytest.raises(InputError, match=r"c:2.*bad source 'guess'"):
        parse_defaults(head + ', source = "guess" }\n', "c")
    with pytest.raises(InputError, match="expected"):
        parse_defaults(head + " }\n", "c")
