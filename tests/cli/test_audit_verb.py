"""``kpsim audit``: the mixed workload audited on every configuration; the JSON shape;
exit 1 when something is wrong (negative control) and 2 on bad input."""

import json

import pytest

from kpsim.cli.main import main

COUNTERS = ("pgtable_alloc", "pgtable_free", "set_memory_pkey", "por_write", "isb",
            "kpkeys_guard_entries", "lazy_mmu_sections", "warnings")  # fmt: skip


def audit(capsys, *opts):
    status = main(["audit", "--memory", "256M", "--json", *opts])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "opts", [(), ("--no-batching",), ("--cpus", "4", "--seed", "7"), ("--scale", "2")]
)
def test_clean_after_the_mixed_workload(capsys, opts):
    status, doc = audit(capsys, *opts)
    assert status == 0 and doc["violations"] == []
    fw = doc["free_watch"]
    assert fw["pgtable_pages_freed"] == fw["pgtable_pages_to_buddy"] > 50
    assert fw["pgtable_pages_freed"] == doc["counters"]["pgtable_free"]
    assert doc["workload"]["ops"]["fork"] >= 3 and doc["workload"]["interrupts"]
    assert doc["workload"]["phases"] == ["faults", "fork", "syscalls", "vmalloc", "exit"]
    assert all(name in doc["counters"] for name in COUNTERS)


@pytest.mark.parametrize("opts", [("--no-poe",), ("--no-hardened-pgtables",)])
def test_clean_without_the_feature(capsys, opts):
    status, doc = audit(capsys, *opts)
    assert status == 0 and doc["violations"] == []
    assert doc["counters"]["set_memory_pkey"] == 0


def test_negative_control_unsafe_split_is_reported_with_exit_1(capsys):
    status, doc = audit(
        capsys, "--linear-map", "block", "--allocator", "minimal", "--allow-unsafe-split"
    )
    assert status == 1
    assert {v["invariant"] for v in doc["violations"]} == {"table-keyed"}
    assert {v["phase"] for v in doc["violations"]} >= {"boot", "end"}


def test_workload_none_audits_the_booted_machine(capsys):
    status, doc = audit(capsys, "--workload", "none")
    assert status == 0 and doc["workload"] == {"name": "none"}


def test_text_output(capsys):
    assert main(["audit", "--memory", "256M"]) == 0
    assert "0 violation(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "opts",
    [("--scale", "0"), ("--scale", "x"), ("--workload", "nope"), ("--scale", "64")],
)
def test_bad_input_is_exit_2(capsys, opts):
    """Bad options, and a workload too big for the machine's memory (64 x 20 MiB > 256M)."""
    with pytest.raises(SystemExit) as exc:
        status = main(["audit", "--memory", "256M", *opts])
        raise SystemExit(status)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.strip()
