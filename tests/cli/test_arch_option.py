"""``--arch arm64|x86`` on every verb (issue 18, item 4): one shared option definition;
a verb that cannot run on x86 yet exits 2 with one line saying what x86 lacks; a
scenario's ``[machine] arch`` is validated with file and line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kpsim.cli import arch_opts
from kpsim.cli.main import build_parser, main
from kpsim.machine.scenario import parse_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRACE = Path(__file__).resolve().parents[1] / "data" / "traces" / "true.trace"

#: the verbs the issue names, and what each needs besides --arch to parse
VERBS: dict[str, tuple[str, ...]] = {
    "run": (),
    "boot": (),
    "kunit": (),
    "audit": (),
    "attack": (),
    "explore": (),
    "ptdump": (),
    "walk": ("0xffff000000000000",),
    "conform": ("--steps", str(EXAMPLES / "steps" / "fork.toml")),
    "replay": (str(TRACE),),
    "reproduce": (),
    "sweep": (str(EXAMPLES / "grids" / "policies.toml"),),
    "decode": ("pte", "0x0"),
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_named_verb_has_the_same_arch_option():
    """Each of the thirteen verbs has ``--arch`` with the choices arm64 and x86, default
    None (the one definition in kpsim.cli.arch_opts)."""
    subs = _subparsers()
    for verb in VERBS:
        opts = [a for a in subs[verb]._actions if "--arch" in a.option_strings]
        assert len(opts) == 1, verb
        assert tuple(opts[0].choices or ()) == ("arm64", "x86"), verb
        assert opts[0].default is None, verb


def test_gaps_name_only_real_verbs():
    """Every verb X86_GAPS refuses exists and takes --arch."""
    subs = _subparsers()
    for verb in arch_opts.X86_GAPS:
        assert any("--arch" in a.option_strings for a in subs[verb]._actions), verb


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_unknown_arch_is_a_usage_error(verb, capsys):
    """``--arch riscv`` is refused by argparse: one line, exit 2."""
    with pytest.raises(SystemExit) as info:
        main([verb, *VERBS[verb], "--arch", "riscv"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "argument --arch: invalid choice: 'riscv'" in err


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_verb_without_x86_exits_2_saying_what_is_missing(verb, capsys, monkeypatch):
    """A verb that cannot run on x86 refuses ``--arch x86`` before doing anything: one
    line naming the verb and what x86 lacks, nothing on stdout, exit 2 (each verb given
    a gap here, whether or not it has one: the mechanism outlives the gaps)."""
    gap = arch_opts.X86_GAPS.get(verb, "a gap made up for this test")
    monkeypatch.setitem(arch_opts.X86_GAPS, verb, gap)
    assert main([verb, *VERBS[verb], "--arch", "x86"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"kpsim {verb}: --arch x86: not available for `kpsim {verb}` yet: {gap}\n"


@pytest.mark.parametrize("verb", sorted(set(VERBS) - set(arch_opts.X86_GAPS)))
def test_verb_with_x86_passes_the_check(verb):
    """A verb x86 lacks nothing for is let through (the negative control of the refusal:
    ``check_arch`` raises nothing for it)."""
    arch_opts.check_arch(verb, "x86")


def test_arm64_is_accepted_explicitly(capsys):
    """``--arch arm64`` is the default machine: ``boot`` runs (a negative control for
    the refusals above)."""
    assert main(["boot", "--arch", "arm64", "--memory", "256M", "--json"]) == 0
    assert '"linear_map"' in capsys.readouterr().out


def test_effective_arch_prefers_the_option_then_the_scenario():
    """--arch wins over the scenario's arch; with neither, arm64."""
    ns = argparse.Namespace(arch=None)
    assert arch_opts.effective_arch(ns) == "arm64"
    assert arch_opts.effective_arch(ns, "x86") == "x86"
    assert arch_opts.effective_arch(argparse.Namespace(arch="arm64"), "x86") == "arm64"


def test_scenario_arch_field_is_parsed_and_validated():
    """``[machine] arch`` is a scenario field; a bad value names file, line and choices."""
    s = parse_scenario('[machine]\narch = "x86"\n[[workload]]\nname = "micromm"\n', "s.toml")
    assert s.machine == {"arch": "x86"}
    assert s.lines["machine.arch"] == 2
    with pytest.raises(Exception) as info:
        parse_scenario('[machine]\n\narch = "sparc"\n[[workload]]\nname = "micromm"\n', "s.toml")
    assert str(info.value) == (
        's.toml:3: [machine] arch: must be one of "arm64" | "x86", got string \'sparc\''
    )
    with pytest.raises(Exception) as info:
        parse_scenario('[machine]\narch = 86\n[[workload]]\nname = "micromm"\n', "s.toml")
    assert str(info.value).startswith("s.toml:2: [machine] arch: must be one of")


def test_bad_scenario_arch_exits_2_with_file_and_line(tmp_path, capsys):
    """``kpsim run`` on a scenario with a bad arch: one line FILE:LINE, exit 2."""
    f = tmp_path / "s.toml"
    f.write_text('seed = 1\n[machine]\narch = "arm"\n[[workload]]\nname = "micromm"\n')
    assert main(["run", str(f)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"kpsim run: {f}:3: [machine] arch: must be one of")


def test_kunit_runs_on_x86_and_its_negative_control_fails(capsys):
    """``kpsim kunit --arch x86`` runs the five cases on the x86 machine (PKS): all pass;
    with the feature off every write lands, so every case fails (exit 1)."""
    assert main(["kunit", "--arch", "x86"]) == 0
    out = capsys.readouterr().out
    assert "# kpkeys_hardened_pgtables: pass:5 fail:0" in out
    assert main(["kunit", "--arch", "x86", "--no-hardened-pgtables"]) != 0
    out = capsys.readouterr().out
    assert "pass:0 fail:5" in out


def test_audit_runs_on_x86_and_reports_nothing(capsys):
    """``kpsim audit --arch x86``: the mixed workload on the x86 machine (PKS), audited
    with the x86 walk, keys and IA32_PKRS: no violation, exit 0 (the audit's negative
    controls on x86 are in tests/audit/test_audit_x86.py and tests/shared)."""
    assert main(["audit", "--arch", "x86", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["arch"] == "x86"
    assert doc["violations"] == []
    assert doc["free_watch"]["pages_freed_checked"] > 0


def test_run_on_x86_prices_with_the_x86_priors(capsys):
    """``kpsim run --arch x86`` (the default scenario leaves the linear map to the
    architecture: x86's block-mapped direct map, and the PBA): KUnit, the audit and
    the workloads run on the x86 machine, and the overhead is priced with the x86
    priors (``costs-x86.toml``: WRMSR to IA32_PKRS, not POR_EL1 writes), not the
    arm64-fitted calibration."""
    assert main(["run", "--arch", "x86", "--json"]) == 0  # the built-in default scenario
    doc = json.loads(capsys.readouterr().out)
    assert doc["machine"]["arch"] == "x86" and doc["audit"]["violations"] == []
    assert doc["machine"]["linear_map"] == "block"  # x86's default direct map
    assert doc["costs"]["source"] == "defaults" and "x86 priors" in doc["costs"]["label"]
    first = doc["workloads"][0]["overhead"]["contributions"]
    assert "pkrs_write" in first and "por_write" not in first
    for w in doc["workloads"]:  # the x86 priors' sensitivity range, not arm64's residuals
        iv = w["overhead"]["interval"]
        assert iv["level"] is None and "not a confidence interval" in iv["basis"]
        assert iv["lo"] <= w["overhead"]["percent"] <= iv["hi"] and iv["lo"] < iv["hi"]
    from kpsim.cli.run import _interval_line, _machine_line

    assert _machine_line(doc["machine"]).startswith("x86, 1G RAM, 2 CPUs, PKS on; direct map")
    assert "sensitivity range" in _interval_line(doc)


def test_run_text_names_the_architecture_and_arm64_keeps_its_interval():
    """Negative control for the above: an arm64 machine line and the calibration's
    held-out quantile for an arm64 document."""
    from kpsim.cli.run import _interval_line, _machine_line

    cfg = {"memory_bytes": 1 << 30, "cpus": 2, "poe": True, "linear_map": "pte",
           "hardened_pgtables": True, "allocator": "minimal", "batching": True,
           "pt_reclaim": True}  # fmt: skip
    assert _machine_line(cfg).startswith("arm64, 1G RAM, 2 CPUs, POE on; linear map pte")
    doc = {"workloads": [{"overhead": {"interval": {"level": 0.95, "lo": 1, "hi": 2}}}]}
    assert _interval_line(doc).startswith("interval: the 95 % quantile of the calibration")
