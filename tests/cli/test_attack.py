"""``kpsim attack``: JSON shape, verdict and exit codes, negative controls, bad options."""

import json

import pytest

from kpsim.cli.main import main

SMALL = ["attack", "--memory", "256M", "--attempts", "2", "--random-attempts", "8"]


def run_json(capsys, *extra):
    status = main([*SMALL, *extra, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_json_shape_and_all_blocked(capsys):
    """Feature on: the JSON lists each class with attempts/blocked/landed; exit 0."""
    status, doc = run_json(capsys)
    assert status == 0 and doc["exit_status"] == 0 and doc["feature_on"] is True
    classes = [t["class"] for t in doc["targets"]]
    assert classes == [
        "user_pte",
        "linear_pte",
        "linear_pmd",
        "linear_pud",
        "vmalloc_pte",
        "kimage_pud",
        "random",
    ]
    for t in doc["targets"]:
        assert {"class", "attempts", "blocked", "landed"} <= set(t)
        if t["class"] != "random":
            assert t["blocked"] == t["attempts"] == 10 and t["landed"] == 0
    assert [t["class"] for t in doc["outside_threat_model"]] == classes
    assert all(t["landed"] == t["attempts"] for t in doc["outside_threat_model"][:-1])


@pytest.mark.parametrize("flag", ["--no-hardened-pgtables", "--no-poe"])
def test_negative_control_lands_exit_0(capsys, flag):
    """Feature off: every entry write lands, and that is no finding (exit 0)."""
    status, doc = run_json(capsys, flag, "--timing", "rest,other_guard")
    assert status == 0 and doc["feature_on"] is False
    for t in doc["targets"]:
        if t["class"] != "random":
            assert t["landed"] == t["attempts"] == 4 and t["blocked"] == 0
    assert doc["landed_in_threat_model"] > 0


def test_unsafe_split_exit_1(capsys):
    """Block map + minimal allocator (--allow-unsafe-split): unkeyed split tables, exit 1."""
    status, doc = run_json(
        capsys, "--linear-map", "block", "--allocator", "minimal", "--allow-unsafe-split"
    )
    assert status == 1 and doc["exit_status"] == 1
    pte = next(t for t in doc["targets"] if t["class"] == "linear_pte")
    assert pte["landed"] == pte["attempts"] and pte["tables_left_unprotected_by_split"] > 0


def test_pba_block_map_all_blocked(capsys):
    """Block map with the block allocator: every entry write blocked, exit 0."""
    status, doc = run_json(capsys, "--linear-map", "block", "--allocator", "pba")
    assert status == 0
    assert all(t["landed"] == 0 for t in doc["targets"])


def test_subset_and_attacker_cpu(capsys):
    """--targets/--timing choose the campaign; --attacker-cpu moves the attacker."""
    status, doc = run_json(
        capsys, "--targets", "user_pte,kimage_pud", "--timing", "rest", "--attacker-cpu", "1"
    )
    assert status == 0 and doc["attack"]["attacker_cpu"] == 1
    assert [t["class"] for t in doc["targets"]] == ["user_pte", "kimage_pud"]
    assert doc["outside_threat_model"] == []
    assert all(list(t["by_timing"]) == ["rest"] for t in doc["targets"])


def test_text_output_has_verdict(capsys):
    """The text report ends with a verdict line."""
    status = main([*SMALL, "--targets", "vmalloc_pte"])
    out = capsys.readouterr().out
    assert status == 0
    assert "verdict: every in-threat-model page-table write was blocked" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--targets", "pte"], "--targets: unknown target 'pte'"),
        (["--timing", "later"], "--timing: unknown timing 'later'"),
        (["--timing", ","], "--timing: empty list"),
        (["--attempts", "0"], "--attempts: must be between 1"),
        (["--random-attempts", "-1"], "--random-attempts: must be between 1"),
        (["--attacker-cpu", "2"], "--attacker-cpu: must be between 0 and 1"),
        (["--attempts", "many"], "not a number"),
        (["--allocator", "nope"], "unknown allocator"),
        (["--linear-map", "block", "--allocator", "minimal"], "needs a PTE-mapped linear map"),
    ],
)
def test_bad_options_exit_2(capsys, argv, message):
    """A bad option is one line on stderr naming it, exit 2, no traceback."""
    try:
        status = main([*SMALL, *argv])
    except SystemExit as exc:  # argparse rejects a non-number itself
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_x86_json_reports_the_pf_error_code(capsys):
    """``--arch x86``: the same classes and keys as arm64, except that a blocked write
    is kept as its #PF error code (0x23: P, W/R, PK; supervisor) instead of an ESR;
    every in-threat-model entry write blocked, exit 0."""
    status, doc = run_json(capsys, "--arch", "x86")
    assert status == 0 and doc["exit_status"] == 0 and doc["feature_on"] is True
    assert doc["machine"]["arch"] == "x86"
    arm_status, arm = run_json(capsys)
    assert arm_status == 0
    assert [t["class"] for t in doc["targets"]] == [t["class"] for t in arm["targets"]]
    for t, a in zip(doc["targets"], arm["targets"], strict=True):
        assert set(t) - set(a) == {"blocked_pf_error_code", "blocked_pf"}
        assert set(a) - set(t) == {"blocked_esr"}
        if t["class"] != "random":
            assert t["blocked"] == t["attempts"] == 10 and t["landed"] == 0
            assert t["blocked_pf_error_code"] == "0x23"


def test_x86_text_names_pks_and_the_direct_map(capsys):
    """The x86 text report names the direct map and PKS and ends with the verdict."""
    status = main([*SMALL, "--arch", "x86", "--targets", "linear_pmd,user_pte"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("kpsim attack: x86, direct map block, allocator pba, PKS on, feature on")
    assert "verdict: every in-threat-model page-table write was blocked" in out
    assert "kimage_alias" not in out  # the arm64 gap hint is arm64's


@pytest.mark.parametrize("flag", ["--no-hardened-pgtables", "--no-poe"])
def test_x86_negative_control_lands_exit_0(capsys, flag):
    """x86 with the feature off, or without PKS (``--no-poe``): every entry write lands
    and gains, exit 0; the note names what is off."""
    status, doc = run_json(capsys, "--arch", "x86", flag, "--timing", "rest,other_guard")
    assert status == 0 and doc["feature_on"] is False
    for t in doc["targets"]:
        if t["class"] != "random":
            assert t["landed"] == t["attempts"] == 4 and t["blocked"] == 0
            assert sum(t["gains"].values()) == 4 and t["blocked_pf_error_code"] is None
    why = "no PKS" if flag == "--no-poe" else "kpkeys_hardened_pgtables off"
    assert any(why in n for n in doc["notes"])


def test_x86_kimage_alias_finding_exit_1(capsys):
    """x86, block-mapped direct map, minimal allocator (--allow-unsafe-split): the image
    split's table, requested under cpa_lock, is unkeyed and a kimage_alias write to it
    lands, exit 1; with the PBA default, and on a 4K direct map (no cpa_lock there, so
    that table is keyed), all are blocked, exit 0."""
    status, doc = run_json(
        capsys, "--arch", "x86", "--linear-map", "block", "--allocator", "minimal",
        "--allow-unsafe-split", "--targets", "kimage_alias", "--timing", "rest",
    )  # fmt: skip
    assert status == 1 and doc["targets"][0]["landed"] > 0
    status, doc = run_json(capsys, "--arch", "x86", "--targets", "kimage_alias", "--timing", "rest")
    assert status == 0 and doc["targets"][0]["landed"] == 0
    status, doc = run_json(
        capsys, "--arch", "x86", "--linear-map", "pte", "--allocator", "minimal",
        "--targets", "kimage_alias", "--timing", "rest",
    )  # fmt: skip
    assert status == 0 and doc["targets"][0]["landed"] == 0
