"""The fuzz harness's seeded short run (part of make test; make fuzz runs it long):
every input format through the real CLI entry point, no traceback, every rejection one
line naming the file. Plus the judge's own negative controls and structured
(Hypothesis) generators for the scenario TOML and the machine options."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import FORMATS, FuzzFailure, boot_stubbed, fuzz, judge, run_argv

CASES = 120


@pytest.mark.parametrize("fmt", FORMATS)
def test_seeded_mutations_break_no_rule(fmt: str) -> None:
    """CASES seeded mutants of the format's seeds: all judged, none a failure, and the
    mix covers both accepted and rejected inputs (the mutator reaches the parser)."""
    tally = fuzz(fmt, CASES, seed=0)
    assert tally.cases == CASES and "FAILURE" not in tally.outcomes
    assert any(k.startswith("rejected") for k in tally.outcomes)


def test_the_judge_catches_broken_rules_negative_control() -> None:
    """Two lines, a traceback, an unnamed file or a status of 3 are each a failure."""
    argv = ["run", "/x.toml"]
    for rc, err, file in (
        (2, "kpsim run: a\nkpsim run: b\n", None),
        (1, "Traceback (most recent call last):\n", None),
        (2, "kpsim run: bad value\n", "/x.toml"),
        (3, "", None),
    ):
        with pytest.raises(FuzzFailure):
            judge(argv, rc, err, file)
    assert judge(argv, 2, "kpsim run: /x.toml:3: bad\n", "/x.toml") == "rejected at a line"


def test_an_escaping_exception_is_a_failure_negative_control(monkeypatch) -> None:
    """A parser that raises a bare exception is reported as one that escaped main."""
    import kpsim.machine.scenario as sc

    def broken(*a, **k):
        raise KeyError("boom")

    monkeypatch.setattr(sc, "parse_scenario", broken)
    monkeypatch.setattr("kpsim.cli.run.parse_scenario", broken, raising=False)
    with boot_stubbed(), pytest.raises(FuzzFailure, match="escaped main"):
        run_argv(["run", "examples/scenarios/default.toml"])


_VALUE = st.one_of(
    st.integers(-(2**65), 2**65), st.booleans(), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(), max_size=3),
)  # fmt: skip
_KEYS = {
    "machine": ["memory", "cpus", "poe", "bogus"],
    "kernel": ["linear_map", "allocator", "batching", "series", "fail_page_alloc", "fail_split",
               "hardened_pgtables", "allow_unsafe_split"],
}  # fmt: skip


def _toml_value(v: object) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(v), repr(v))
    return json.dumps(v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tables=st.dictionaries(
        st.sampled_from(sorted(_KEYS)),
        st.dictionaries(st.sampled_from(_KEYS["kernel"] + _KEYS["machine"]), _VALUE, max_size=4),
        max_size=2,
    ),
    seed=st.one_of(st.none(), _VALUE),
)
def test_structured_scenarios_are_accepted_or_rejected_in_one_line(tmp_path_factory, tables, seed):
    """Any [machine]/[kernel] table of any typed values: accepted, or one named line."""
    path = tmp_path_factory.mktemp("s") / "s.toml"
    lines = [] if seed is None else [f"seed = {_toml_value(seed)}"]
    for name, fields in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    with boot_stubbed():
        run_argv(["run", str(path)], str(path))


def test_a_value_with_a_newline_is_reported_on_one_line(capsys) -> None:
    """Found by the fuzzer: an unknown argument or bad value holding a newline printed
    two lines; it is escaped now (the control: a plain bad value, one line too)."""
    from kpsim.cli.main import main

    for argv in (
        ["kunit", "--ops", "1\n2"],
        ["boot", "--memory", "1\n2G"],
        ["boot", "--cpus", "x"],
    ):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's errors leave through SystemExit(2)
            rc = e.code
        assert rc == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kpsim"), err


def test_a_snapshot_that_is_not_utf8_is_input_error(tmp_path) -> None:
    """Found by the fuzzer: a non-UTF-8 snapshot raised UnicodeDecodeError; now an
    InputError naming the file (control: a valid one loads)."""
    from kpsim.errors import InputError
    from kpsim.workloads.snapshot import load_snapshot

    from .harness import snapshot_seed

    path = tmp_path / "s.json"
    path.write_bytes(b'{"format": 1, "pid": \xff}')
    with pytest.raises(InputError, match="not UTF-8"):
        load_snapshot(path)
    path.write_bytes(snapshot_seed().replace(b'"vmpte_pages": 3', b'"vmpte_pages": Infinity'))
    with pytest.raises(InputError, match="not a kpsim snapshot"):  # was an OverflowError
        load_snapshot(path)
    path.write_bytes(snapshot_seed())
    assert load_snapshot(path).pid == 4242


def _rejection(argv: list[str], capsys) -> str:
    """``main(argv)``'s one-line rejection (status 2)."""
    from kpsim.cli.main import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, (rc, err)
    return err


@pytest.mark.parametrize(
    ("argv", "text", "where"),
    [  # found by the fuzzer: each named the file only
        (["run"], b'seed = 1\n[machine]\nmemory = "1G', ":3: TOML syntax: Unterminated string"),
        (["run"], b"[machine]\ncpus = 2\n\n", ":2: no [[workload]]"),
        (["run"], b"seed = 1\n\xff\n", ":2: scenario is not UTF-8 text (invalid start byte at "
         "column 1)"),
        (["conform", "--sim-only", "--steps"], b"[[step]]\nop = [\n", ":2: TOML syntax error"),
        (["conform", "--sim-only", "--steps"], b"# nothing\n", ":1: no steps"),
        (["replay"], b"# only a comment\n\n", ":1: no perf script records"),
        (["sweep"], b"[binfase.machine]\ncpus = 2\n", ":1: unknown top-level key 'binfase'"),
        (["sweep"], b'audit = "end"\n[grid]\nseed = [0]\n', ":2: no workloads"),
        (["explore", "--replay"], b"# kpsim explore schedule\nseries v7\nmemory 2M\n",
         ":3: memory must be between"),
    ],
)  # fmt: skip
def test_a_whole_file_rejection_names_a_line(tmp_path, capsys, argv, text, where) -> None:
    """A problem found at the end of a file (tomllib's "at end of document"), a missing
    table, a bad byte, a header's implicit table, a machine value out of range: each
    rejection now names a line of the file (control: the fuzz judge refuses one that
    does not, below)."""
    path = tmp_path / "input"
    path.write_bytes(text)
    err = _rejection([*argv, str(path)], capsys)
    assert f"{path}{where}" in err, err


def test_the_judge_refuses_a_rejection_without_a_line_negative_control() -> None:
    with pytest.raises(FuzzFailure, match="names no line"):
        judge(["run", "/x.toml"], 2, "kpsim run: /x.toml: no [[workload]]\n", "/x.toml")


def test_a_snapshot_field_problem_names_field_and_line(tmp_path) -> None:
    """A missing or mistyped snapshot field: named by its path, at its line (it was
    "not a kpsim snapshot: 'pid'" with no line); control: the document loads whole."""
    import json

    from kpsim.errors import InputError
    from kpsim.workloads.snapshot import load_snapshot

    from .harness import snapshot_seeds

    good = snapshot_seeds()[0]
    path = tmp_path / "s.json"
    path.write_bytes(good)
    assert load_snapshot(path).pid == 4242
    doc = json.loads(good)
    doc["maps"][0]["end"] = "zz"
    path.write_text(json.dumps(doc, indent=1))
    with pytest.raises(InputError, match=r":11: not a kpsim snapshot: maps\[0\]\.end: invalid"):
        load_snapshot(path)
    doc = json.loads(good)
    del doc["pid"]
    path.write_text(json.dumps(doc, indent=1))
    with pytest.raises(InputError, match=r"s\.json:\d+: not a kpsim snapshot: missing field pid"):
        load_snapshot(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["pba", "--fail-pagetable-alloc", "probability=100,times=1"],
        ["replay", "--fail-pagetable-alloc", "probability=100,times=1", "TRACE"],
    ],
)
def test_an_injected_failure_in_a_verb_that_stops_is_one_line(capsys, argv) -> None:
    """Found by the fuzzer's real runs: ``kpsim pba`` and ``kpsim replay`` with an
    injection that fails the first page-table allocation let ``SyscallError(ENOMEM)``
    out of main (a traceback). Now one line saying what stopped it, status 2; control:
    the same command without the injection runs (status 0)."""
    from kpsim.cli.main import main

    from .harness import ROOT

    trace = str(ROOT / "tests/data/traces/true.trace")
    argv = [trace if a == "TRACE" else a for a in argv]
    err = _rejection(argv, capsys)
    assert "injected allocation failure stopped" in err and "pgd_alloc" in err
    assert main([a for a in argv if not a.startswith(("--fail", "prob"))]) == 0


def test_a_real_run_is_cut_at_its_cpu_budget() -> None:
    """``run_real`` boots for real and stops a long run at its CPU budget (control: the
    stubbed case is only "accepted")."""
    from .harness import ROOT, run_real

    argv = ["run", str(ROOT / "examples/scenarios/default.toml")]
    with boot_stubbed():
        assert run_argv(argv) == "accepted"
        assert run_real(argv, None, 0.2) == "ran: cut at the CPU budget"
