"""``kpsim kunit`` and ``kpsim audit`` verbs: results, negative control, exit codes."""

import json

from kpsim.cli.main import main


def run_json(capsys, argv):
    status = main(argv)
    return status, json.loads(capsys.readouterr().out)


def test_kunit_protected_cases_pass(capsys):
    """On a pte machine with the feature on, the kernel-side cases pass with -EFAULT."""
    status, doc = run_json(capsys, ["kunit", "--memory", "512M", "--json"])
    by = {c["name"]: c for c in doc["cases"]}
    for name in (
        "write_direct_map_pgtables",
        "write_kernel_image_pud",
        "write_kernel_vmalloc_pte",
        "write_vmemmap_pmd",
    ):
        assert by[name]["status"] == "pass"
        assert all(k["result"] == -14 for k in by[name]["checks"])
    assert doc["suite"] == "kpkeys_hardened_pgtables"
    assert status == (1 if doc["failed"] else 0)


def test_kunit_negative_control_every_case_fails(capsys):
    """With --no-hardened-pgtables every write lands and every case fails (exit 1)."""
    status, doc = run_json(
        capsys, ["kunit", "--memory", "512M", "--no-hardened-pgtables", "--json"]
    )
    assert status == 1
    assert doc["failed"] == 5 and doc["passed"] == 0


def test_kunit_skips_without_poe(capsys):
    """Without POE every case is skipped and the run succeeds."""
    status, doc = run_json(capsys, ["kunit", "--memory", "512M", "--no-poe", "--json"])
    assert status == 0 and doc["skipped"] == 5


def test_audit_clean_after_vmalloc_churn(capsys):
    """The audit finds no violation on a hardened pte machine after vmalloc churn."""
    status, doc = run_json(capsys, ["audit", "--memory", "512M", "--json"])
    assert status == 0 and doc["violations"] == []


def test_audit_reports_unsafe_split(capsys):
    """The minimal allocator on a block map with --allow-unsafe-split is caught (exit 1)."""
    status, doc = run_json(
        capsys,
        ["audit", "--memory", "1G", "--linear-map", "block", "--allow-unsafe-split", "--json"],
    )
    assert status == 1
    assert any(v["invariant"] == "table-keyed" for v in doc["violations"])


def test_bad_memory_is_exit_2(capsys):
    """An impossible size is one line on stderr and exit status 2."""
    assert main(["kunit", "--memory", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory" in err
