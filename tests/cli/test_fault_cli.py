"""Fault-injection options on the command line and in a scenario: bad specs are one
line and exit 2; kpsim audit --workload soak reports what was injected and survived."""

from __future__ import annotations

import json

from kpsim.cli.main import main


def test_bad_fail_spec_is_one_line_exit_2(capsys) -> None:
    """--fail-page-alloc with 2 fields, or an unknown attribute: one line, exit 2."""
    for spec in ("1,2", "probability=5,bogus=1", "probability=101"):
        assert main(["boot", "--memory", "256M", "--fail-page-alloc", spec]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "fail_page_alloc" in err, err


def test_bad_fail_spec_in_a_scenario_names_its_line(tmp_path, capsys) -> None:
    """[kernel] fail_split = "x" is blamed on its line of the scenario file."""
    path = tmp_path / "s.toml"
    path.write_text('[machine]\nmemory = "256M"\n\n[kernel]\nfail_split = "x"\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kpsim run: {path}:5: [kernel] fail_split"), err


def test_audit_soak_reports_injection_and_a_clean_machine(capsys) -> None:
    """kpsim audit --workload soak with injection: failures injected, 0 violations,
    0 pages lost, exit 0; the same without injection injects nothing (control)."""
    base = ["audit", "--workload", "soak", "--ops", "300", "--memory", "512M", "--json"]
    assert main([*base, "--fail-page-alloc", "1,10,0,-1", "--fail-split", "1,10,0,-1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fault_inject"]["page_alloc"]["injected"] > 0
    assert doc["violations"] == [] and doc["workload"]["balance"]["lost"] == 0
    assert main(base) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fault_inject"] is None and doc["workload"]["enomem"] == {}
    assert doc["workload"]["balance"]["lost"] == 0


def test_soak_seed_0_without_injection_is_clean(capsys) -> None:
    """The soak of the control above, seed 0, no injection: no violation (it found a
    TLB bulk fill that filed a page under another 2 MiB region, tests/hw/test_tlb_bulk.py)."""
    assert main(["audit", "--workload", "soak", "--ops", "300", "--memory", "512M"]) == 0


def test_explore_under_injection_counts_enomem_not_violations(capsys) -> None:
    """kpsim explore with failing allocations: the explored paths fail with -ENOMEM
    (counted), never a model error, and the protection checks still pass (exit 0)."""
    argv = ["explore", "--schedules", "150", "--json", "--fail-page-alloc", "1,20,0,-1",
            "--fail-pagetable-alloc", "1,20,0,-1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model-error" not in out
