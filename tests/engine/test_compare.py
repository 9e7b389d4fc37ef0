"""kpsim compare (issue 18, item 5): arm64 POE and x86 PKS on the same benchmark rows,
counted events side by side, arm64 fitted and prior figures, x86 prior-only."""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main
from kpsim.engine.compare import compare, event_groups, machine_runner, prior_groups, prior_range
from kpsim.events import Counters

SMALL = {"size": 4 << 20, "loops": 4}


def test_event_groups_line_up_both_architectures_names():
    """POR_EL1 writes and WRMSRs to PKRS are one group; TLBIs and INVLPG/INVPCID another;
    a group neither run counted is left out."""
    on = {"por_write": 10, "tlbi_va": 3, "pgtable_alloc": 5}
    off = {"pgtable_alloc": 5}
    groups = {g["group"]: g for g in event_groups(on, off)}
    assert groups["pkey register writes"] == {
        "group": "pkey register writes", "counters": ["por_write"], "off": 0, "on": 10, "added": 10
    }  # fmt: skip
    x86 = {g["group"]: g for g in event_groups({"pkrs_write": 7, "invlpg": 2}, {})}
    assert x86["pkey register writes"]["counters"] == ["pkrs_write"]
    assert x86["TLB invalidations"]["counters"] == ["invlpg"]
    assert "table frees" not in groups


def test_prior_groups_split_hardware_from_shared_software():
    """x86's hardware priors are costs-x86.toml's own entries, arm64's the POR/barrier/TLBI
    ones; both share the software priors."""
    hw_arm, sw_arm = prior_groups("arm64")
    hw_x86, sw_x86 = prior_groups("x86")
    assert "por_write" in hw_arm and "pkrs_write" in hw_x86 and "tlb_shootdown" in hw_x86
    assert "pkrs_write" not in hw_arm and "por_write" not in hw_x86
    assert sw_arm == sw_x86 and "pgtable_alloc" in sw_x86


def test_prior_range_brackets_the_prior_figure_and_says_it_is_no_confidence_interval():
    """The range contains the centre; a run that adds only x86 hardware events has a
    range from scaling those priors; identical runs (the negative control) give 0."""
    off = {"pgfault": 1000}
    on = {"pgfault": 1000, "pkrs_write": 400}
    r = prior_range(on, off, "x86")
    assert r["lo"] < r["percent"] < r["hi"]
    assert "not a confidence interval" in r["basis"] and "costs-x86.toml" in r["basis"]
    assert prior_range(off, off, "x86") == {**r, "percent": 0.0, "lo": 0.0, "hi": 0.0}


def test_compare_with_a_stub_runner_prices_each_side_with_its_own_table():
    """x86 has no fitted figure (nothing is fitted on x86); arm64 has both; the same
    on/off counts cost differently when they hold a shootdown."""

    def run(arch, row, hardened):
        base = {"pgfault": 1000, "pgtable_alloc": 10}
        extra = {
            "arm64": {"por_write": 100, "isb": 100},
            "x86": {"pkrs_write": 100, "tlb_shootdown": 5},
        }
        return Counters(base | (extra[arch] if hardened else {}))

    doc = compare("fork/h:0", runner=run)
    (row,) = doc["rows"]
    assert row["x86"]["fitted"] is None and row["arm64"]["fitted"]["level"] == 0.95
    assert row["x86"]["prior"]["percent"] > row["arm64"]["prior"]["percent"] > 0
    assert doc["machines"]["x86"]["allocator"] == "pba"
    assert doc["machines"]["arm64"]["linear_map"] == "pte"
    assert "prior-only" in doc["note"]


def test_real_runs_count_each_architectures_own_register_writes():
    """On the models: arm64 writes POR_EL1 (and ISBs), x86 writes IA32_PKRS (no ISB);
    the feature-off runs write neither (the negative control)."""
    doc = compare("fork/h:0", runner=machine_runner(scale=SMALL))
    (row,) = doc["rows"]
    arm = {g["group"]: g for g in row["arm64"]["events"]}
    x86 = {g["group"]: g for g in row["x86"]["events"]}
    assert arm["pkey register writes"]["counters"] == ["por_write"]
    assert x86["pkey register writes"]["counters"] == ["pkrs_write"]
    assert arm["pkey register writes"]["off"] == x86["pkey register writes"]["off"] == 0
    assert arm["pkey register writes"]["added"] > 0 and x86["pkey register writes"]["added"] > 0
    assert "ISBs after them" in arm and "ISBs after them" not in x86


def test_cli_json_and_text(capsys: pytest.CaptureFixture[str]):
    """kpsim compare --json: one document; the text names x86 as prior-only."""
    args = ["compare", "--rows", "vm_map_ram", "--size", "4M", "--loops", "4"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in doc["rows"]] == ["vm_map_ram/p:1,h:0"]
    assert doc["scale"]["loops"] == 4
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "overhead x86, priors only:" in out and "x86 figures are prior-only" in out


def test_bad_size_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]):
    """--size 3M is not a multiple of 2M: exit 2, one line."""
    assert main(["compare", "--size", "3M"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
