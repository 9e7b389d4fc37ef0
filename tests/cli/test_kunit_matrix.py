"""``kpsim kunit --json`` over the machine matrix the issue names: all five cases pass
on pte machines with either batching setting, skip without POE, fail with the feature
off (the negative control), and the JSON carries the issue's counters."""

import json

import pytest

from kpsim.cli.main import main

CASES = {
    "write_direct_map_pgtables": ["pud", "pmd", "pte"],
    "write_kernel_image_pud": ["pud"],
    "write_kernel_vmalloc_pte": ["pte"],
    "write_vmemmap_pmd": ["pmd"],
    "write_user_pmd": ["pmd"],
}
COUNTERS = ("pgtable_alloc", "pgtable_free", "set_memory_pkey", "por_write", "isb",
            "kpkeys_guard_entries", "lazy_mmu_sections", "warnings")  # fmt: skip


def kunit(capsys, *opts):
    status = main(["kunit", "--memory", "256M", "--linear-map", "pte", "--json", *opts])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("batching", ["--batching", "--no-batching"])
def test_all_five_pass_on_pte_machines(capsys, batching):
    status, doc = kunit(capsys, batching)
    assert status == 0
    assert (doc["passed"], doc["failed"], doc["skipped"]) == (5, 0, 0)
    assert doc["suite"] == "kpkeys_hardened_pgtables"
    for case in doc["cases"]:
        assert set(case) == {"name", "status", "message", "checks"}
        assert case["status"] == "pass" and case["message"] == ""
        assert [c["level"] for c in case["checks"]] == CASES[case["name"]]
        assert all(c["result"] == c["expected"] == -14 for c in case["checks"])


@pytest.mark.parametrize(
    "opts",
    [("--no-poe",), ("--no-poe", "--no-batching"), ("--no-poe", "--no-hardened-pgtables")],
)
def test_all_five_skip_without_poe(capsys, opts):
    status, doc = kunit(capsys, *opts)
    assert status == 0
    assert (doc["passed"], doc["failed"], doc["skipped"]) == (0, 0, 5)
    assert all(c["status"] == "skip" and c["checks"] == [] for c in doc["cases"])
    assert all("POE" in c["message"] for c in doc["cases"])


@pytest.mark.parametrize("batching", ["--batching", "--no-batching"])
def test_all_five_fail_with_the_feature_off(capsys, batching):
    status, doc = kunit(capsys, "--no-hardened-pgtables", batching)
    assert status == 1
    assert (doc["passed"], doc["failed"], doc["skipped"]) == (0, 5, 0)
    for case in doc["cases"]:
        assert case["status"] == "fail" and "succeeded" in case["message"]
        assert all(c["result"] == 0 for c in case["checks"])  # the writes landed


def test_kunit_json_carries_the_counters(capsys):
    _, doc = kunit(capsys)
    assert all(name in doc["counters"] for name in COUNTERS)
    assert doc["counters"]["set_memory_pkey"] > 0 and doc["counters"]["por_write"] > 0


def test_kunit_text_output(capsys):
    """--text: the table, whatever stdout is (piped output is KTAP by default)."""
    assert main(["kunit", "--memory", "256M", "--text"]) == 0
    out = capsys.readouterr().out
    assert "passed 5, failed 0, skipped 0" in out and "write_user_pmd" in out
