"""``kpsim explore --arch x86``: the verb on the x86 machine (PKS), in text and JSON, a
``--disable`` run that finds and saves a violating schedule (which replays on x86), and
the step x86 has no meaning for refused with one line and exit status 2."""

from __future__ import annotations

import json

from kpsim.cli.main import main


def test_explore_x86_text_finds_nothing(capsys):
    """Text output names x86 and its points (WRMSR to IA32_PKRS, no ISB); exit 0."""
    assert main(["explore", "--arch", "x86", "--schedules", "150"]) == 0
    out = capsys.readouterr().out
    assert "workload guarded-paths, x86, series enter-leave" in out
    assert "pkrs_write:before" in out and "isb:after" not in out
    assert "violations none" in out


def test_explore_x86_json_document(capsys):
    """--json: one document with the x86 machine actually booted (a 4K direct map for
    guarded-paths), its points, and no violation."""
    assert main(["explore", "--arch", "x86", "--schedules", "150", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["arch"] == "x86" and doc["machine"]["arch"] == "x86"
    assert doc["machine"]["linear_map"] == "pte" and doc["boot_findings"] == []
    assert doc["points_by_kind"]["pkrs_write:after"] > 0
    assert "por_write:after" not in doc["points_by_kind"]
    assert doc["first_violation"] is None and doc["status"] == 0


def test_explore_x86_disabled_step_is_found_saved_and_replayed(tmp_path, capsys):
    """--disable reset-on-entry on x86: exit 1, the shortest schedule saved with its
    arch, and --replay boots the x86 machine again and finds the same violation."""
    saved = tmp_path / "x86.sched"
    argv = ["explore", "--arch", "x86", "--disable", "reset-on-entry", "--schedules", "600"]
    assert main([*argv, "--json", "--save", str(saved)]) == 1
    doc = json.loads(capsys.readouterr().out)
    first = doc["first_violation"]
    assert first["violations"][0]["check"] == "unguarded-write-landed"
    assert "IA32_PKRS" in first["violations"][0]["detail"]
    text = saved.read_text()
    assert "\narch x86\n" in text and "\ndisable reset-on-entry\n" in text
    assert main(["explore", "--replay", str(saved), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["arch"] == "x86"
    assert rep["violations"][0]["check"] == "unguarded-write-landed"


def test_explore_x86_refuses_the_isb_step_with_exit_2(tmp_path, capsys):
    """--disable isb-after-por-write on x86: x86 has no barrier after the WRMSR to
    switch off; one line on stderr, nothing on stdout, exit 2 (arm64 runs it: the
    negative control, which finds the missing ISB at once)."""
    assert main(["explore", "--arch", "x86", "--disable", "isb-after-por-write"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "--disable isb-after-por-write: no such step on x86" in err
    argv = ["explore", "--disable", "isb-after-por-write", "--schedules", "5", "--json"]
    assert main([*argv, "--save", str(tmp_path / "isb.sched")]) == 1


def test_explore_x86_block_direct_map_refused_for_guarded_paths(capsys):
    """--linear-map block with a workload that runs on the 4K direct map: exit 2."""
    assert main(["explore", "--arch", "x86", "--linear-map", "block"]) == 2
    assert "runs on a 4K direct map on x86" in capsys.readouterr().err
