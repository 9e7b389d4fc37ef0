"""``kpsim run``: the JSON document, scenario runs, overrides, exit codes, --out, and
malformed scenarios reported as one line naming file, line and field (exit 2)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.cli.run import DEFAULT_SCENARIO, DEFAULT_SCENARIO_NAME
from kpsim.engine.job import execute
from kpsim.machine import config as machine_config_mod
from kpsim.machine.scenario import load_scenario, machine_config, parse_scenario
from kpsim.workloads import registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"

SMALL = """\
seed = 3

[machine]
memory = "256M"
cpus = 2

[kernel]
hardened_pgtables = true

[[workload]]
name = "vmalloc.fix_size_alloc"
pages = 4
loops = 8

[[workload]]
name = "micromm.fork"
size = "2M"
h = 0
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_json(capsys, argv):
    status = main(["run", *argv, "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out)


@pytest.fixture(scope="module")
def small_doc(tmp_path_factory):
    """One run of SMALL, shared by the structure tests (each run boots 5 machines)."""
    path = write(tmp_path_factory.mktemp("run"), SMALL)
    return execute(load_scenario(path))


# --------------------------------------------------------------------------- the document


def test_json_document_has_every_section(small_doc):
    """One document: scenario, machine, KUnit, audit, workloads, linear map, costs, status."""
    doc = small_doc
    assert set(doc) == {"scenario", "machine", "kunit", "audit", "workloads", "linear_map",
                        "attack", "costs", "status"}  # fmt: skip
    assert doc["machine"]["memory_bytes"] == 256 << 20 and doc["machine"]["seed"] == 3
    assert doc["kunit"]["passed"] == 5 and doc["kunit"]["failed"] == 0
    # the boot machine plus one feature-on and one feature-off machine per workload
    assert doc["audit"] == {"machines": 5, "violations": []}
    assert doc["status"] == 0 and doc["attack"] is None
    assert [w["name"] for w in doc["workloads"]] == ["vmalloc.fix_size_alloc", "micromm.fork"]
    assert doc["workloads"][0]["params"]["loops"] == 8  # validated values, defaults filled in
    assert doc["workloads"][1]["params"]["repeat"] == 1
    assert doc["linear_map"]["at_boot"]["mapped_bytes"] == 256 << 20
    json.dumps(doc)  # plain JSON all the way down


def test_overhead_is_the_estimate_on_against_off_and_decomposes(small_doc):
    """overhead = (on - off) / off; the events' contributions add up to it; costs price counts."""
    cost = small_doc["costs"]["cycles"]
    for w in small_doc["workloads"]:
        on, off = w["on"], w["off"]
        for run in (on, off):
            total = math.fsum(n * cost.get(k, 0.0) for k, n in run["counters"].items())
            assert run["cycles"] == pytest.approx(total)
        percent = w["overhead"]["percent"]
        assert percent == pytest.approx(100 * (on["cycles"] - off["cycles"]) / off["cycles"])
        assert math.fsum(w["overhead"]["contributions"].values()) == pytest.approx(percent)
        # the hardening switches POR_EL1 only with the feature on
        assert on["counters"].get("por_write", 0) > 0 and off["counters"].get("por_write", 0) == 0
        assert percent > 0


def test_changing_one_cost_changes_only_the_runs_that_count_it(tmp_path, capsys, small_doc):
    """--costs por_write = 1000: feature-off estimates (no POR_EL1 writes) stay put; each
    feature-on estimate moves by exactly its por_write count times the cost change."""
    base = small_doc["costs"]["cycles"]["por_write"]
    costs = write(tmp_path, "[costs]\npor_write = 1000\n", "costs.toml")
    status, doc = run_json(capsys, [write(tmp_path, SMALL), "--costs", costs])
    assert status == 0 and doc["costs"]["source"] == costs
    for new, old in zip(doc["workloads"], small_doc["workloads"], strict=True):
        assert new["off"]["cycles"] == old["off"]["cycles"]
        n = new["on"]["counters"]["por_write"]
        assert new["on"]["cycles"] == pytest.approx(old["on"]["cycles"] + n * (1000 - base))
        assert new["overhead"]["percent"] > old["overhead"]["percent"]


def test_bad_cost_file_is_exit_2(tmp_path, capsys):
    """An unknown event in --costs is named with the cost file's line, exit 2."""
    costs = write(tmp_path, "[costs]\n\nno_such_event = 3\n", "costs.toml")
    assert main(["run", write(tmp_path, SMALL), "--costs", costs]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kpsim run: {costs}:3: ") and "no_such_event" in err, err


def test_no_poe_is_the_negative_control(tmp_path, capsys):
    """Without POE the feature stays inert: KUnit skips, no POR_EL1 writes, overhead 0."""
    status, doc = run_json(capsys, [write(tmp_path, SMALL), "--no-poe"])
    assert status == 0 and doc["machine"]["poe"] is False
    assert doc["kunit"]["skipped"] == 5 and doc["kunit"]["passed"] == 0
    for w in doc["workloads"]:
        assert w["on"]["counters"].get("por_write", 0) == 0
        assert w["overhead"]["percent"] == pytest.approx(0.0)


def test_feature_off_scenario_runs_once_and_skips_kunit(tmp_path, capsys):
    """hardened_pgtables = false: one run per workload, no overhead, KUnit not run."""
    text = SMALL.replace("hardened_pgtables = true", "hardened_pgtables = false")
    status, doc = run_json(capsys, [write(tmp_path, text)])
    assert status == 0 and doc["kunit"]["run"] is False
    assert doc["audit"]["machines"] == 3
    for w in doc["workloads"]:
        assert "on" not in w and w["overhead"] is None and w["off"]["cycles"] > 0


def test_machine_options_override_the_scenario(tmp_path, capsys):
    """--cpus and --no-batching win over the scenario's values; the rest is the scenario's."""
    status, doc = run_json(capsys, [write(tmp_path, SMALL), "--cpus", "1", "--no-batching"])
    assert status == 0
    assert doc["machine"]["cpus"] == 1 and doc["machine"]["batching"] is False
    assert doc["machine"]["memory_bytes"] == 256 << 20 and doc["machine"]["seed"] == 3


def test_text_screen_shows_every_section(tmp_path, capsys):
    """The screen names the machine, KUnit, audit, each workload's overhead and the linear map."""
    assert main(["run", write(tmp_path, SMALL)]) == 0
    out = capsys.readouterr().out
    for needle in ("machine", "256M RAM", "KUnit", "5/5 passed", "audit", "clean",
                   "vmalloc.fix_size_alloc pages=4 loops=8", "micromm.fork size=2M h=0",
                   "overhead", "por_write", "linear map", "2M x6 + 4K x62,464"):  # fmt: skip
        assert needle in out, needle


def test_out_writes_json_text_and_scenario(tmp_path, capsys):
    """--out DIR writes run.json (the --json document), run.txt (the screen), scenario.toml."""
    path = write(tmp_path, SMALL)
    out = tmp_path / "out" / "nested"
    status, doc = run_json(capsys, [path, "--out", str(out)])
    assert status == 0
    assert json.loads((out / "run.json").read_text()) == doc
    text = (out / "run.txt").read_text()
    assert "KUnit" in text and "micromm.fork size=2M h=0" in text
    assert (out / "scenario.toml").read_text() == SMALL


def test_out_onto_a_file_is_exit_2(tmp_path, capsys):
    """--out naming an existing file is bad input: one line, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", write(tmp_path, SMALL), "--out", str(blocker / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


def _unkey_a_table(m, params, rng):
    """A broken 'workload': clears the pkey of a live kernel PTE table page."""
    from kpsim.audit.invariants import table_tree
    from kpsim.mm.vmalloc import vmalloc

    vmalloc(m.k, 4 << 12)
    pfn = next(p for p, level in table_tree(m.mem, m.arch.swapper_pg_dir) if level == 3)
    m.arch.set_memory_pkey(m.arch.page_to_virt(pfn), 1, 0)


def test_audit_violation_is_exit_1(tmp_path, capsys, monkeypatch):
    """A run that leaves a table page unkeyed fails the audit: exit 1, the screen says so."""
    bad = dataclasses.replace(registry.WORKLOADS["vmalloc.fix_size_alloc"], run=_unkey_a_table)
    monkeypatch.setitem(registry.WORKLOADS, "vmalloc.fix_size_alloc", bad)
    text = SMALL.split("[[workload]]")[0] + '[[workload]]\nname = "vmalloc.fix_size_alloc"\n'
    path = write(tmp_path, text)
    status, doc = run_json(capsys, [path])
    assert status == 1
    where = {v["machine"] for v in doc["audit"]["violations"]}
    assert where == {"#1 vmalloc.fix_size_alloc (feature on)"}
    assert main(["run", path]) == 1
    assert "VIOLATION" in capsys.readouterr().out


ATTACK = """\
[machine]
memory = "256M"
cpus = 1

[[workload]]
name = "vmalloc.fix_size_alloc"
pages = 1
loops = 4

[attack]
targets = ["user_pte"]
timings = ["rest", "other_guard"]
attempts = 2
cpu = 0
"""


@pytest.mark.parametrize("arch", ["arm64", "x86"])
def test_attack_is_blocked_with_the_feature_and_lands_without(tmp_path, capsys, arch):
    """The [attack] campaign runs feature on (blocked) and off (the negative control
    lands), on either architecture (``[machine] arch``)."""
    text = ATTACK if arch == "arm64" else ATTACK.replace("[machine]\n", '[machine]\narch = "x86"\n')
    status, doc = run_json(capsys, [write(tmp_path, text)])
    assert doc["machine"].get("arch", "arm64") == arch
    assert status == 0
    on, off = doc["attack"]["on"], doc["attack"]["off"]
    assert on["landed_in_threat_model"] == 0 and on["targets"][0]["blocked"] == 2
    assert off["landed_in_threat_model"] == 2
    assert on["skipped"] == [{"class": "user_pte", "timing": "other_guard", "reason": "one CPU"}]
    assert doc["audit"]["machines"] == 5  # boot, the workload on and off, the attack on and off
    blocked = "blocked_esr" if arch == "arm64" else "blocked_pf_error_code"
    assert on["targets"][0][blocked] is not None and off["targets"][0][blocked] is None
    assert main(["run", write(tmp_path, text)]) == 0
    out = capsys.readouterr().out
    assert "feature on: 0/2 targeted page-table writes landed" in out


@pytest.mark.parametrize(
    ("old", "new", "line", "needle"),
    [
        ("cpu = 0", "cpu = 1", 14, "[attack] cpu: attacker cpu 1: the machine has 1 CPU(s)"),
        ("attempts = 2", "tries = 2", 13, "[attack] tries: unknown key"),
    ],
)
def test_bad_attack_table_is_exit_2(tmp_path, capsys, old, new, line, needle):
    """A bad [attack] table is caught before anything runs: file:line, exit 2."""
    path = write(tmp_path, ATTACK.replace(old, new))
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kpsim run: {path}:{line}: ") and needle in err, err


def test_workload_too_big_for_the_machine_is_exit_2(tmp_path, capsys):
    """A workload that exhausts the simulated RAM is blamed on its [[workload]] line."""
    text = '[machine]\nmemory = "256M"\n\n[[workload]]\nname = "micromm.munmap"\nsize = "1G"\n'
    path = write(tmp_path, text)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kpsim run: {path}:4: [[workload]] micromm.munmap: "), err
    assert "ran out of memory" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- scenarios


def test_default_scenario_is_shipped_verbatim():
    """examples/scenarios/default.toml is the built-in default, byte for byte."""
    assert (EXAMPLES / "default.toml").read_text() == DEFAULT_SCENARIO
    s = parse_scenario(DEFAULT_SCENARIO, DEFAULT_SCENARIO_NAME)
    assert s.machine["poe"] is True and s.kernel["hardened_pgtables"] is True
    names = {w.name for w in s.workloads}
    assert names == set(registry.WORKLOADS)  # kernbench and every micro-benchmark


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_scenarios_validate(path):
    """Every shipped scenario parses, its workload parameters validate, its machine builds."""
    s = load_scenario(path)
    for w in s.workloads:
        registry.validate_params(w.name, w.params, spec=w)
    assert s.kernel.get("allocator", "minimal") in machine_config_mod.ALLOCATORS
    machine_config(s)


WL = '\n[[workload]]\nname = "vmalloc.fix_size_alloc"\npages = 4\n'

MALFORMED = [
    # (scenario text, line, text the message must contain)
    ("[machine]\ncpus = 2\ncolour = 1\n" + WL, 3, "[machine]: unknown field 'colour'"),
    ("[machine]\ncpus = \"2\"\n" + WL, 2, "[machine] cpus: must be an integer"),
    ("[machine]\nmemory = \"lots\"\n" + WL, 2, "[machine] memory"),
    ("[machine]\nmemory = \"100M\"\n" + WL, 2, "[machine] memory: must be a multiple of 2M"),
    ("[kernel]\nbatching = \"yes\"\n" + WL, 2, "[kernel] batching: must be true or false"),
    ("seed = 1\n\n[[workload]]\nname = \"kernbnch\"\n", 4, "unknown workload 'kernbnch'"),
    ("[[workload]]\nname = \"micromm.fork\"\nsize = \"2M\"\nhuge = 1\n", 4,
     "micromm.fork huge: unknown parameter 'huge'"),
    ("[[workload]]\nname = \"micromm.fork\"\n\nh = 2\n", 4, "micromm.fork h: must be one of 0, 1"),
    ("[[workload]]\nname = \"micromm.munmap\"\nsize = \"2Q\"\n", 3, "micromm.munmap size"),
    ("[[workload]]\nname = \"vmalloc.fix_size_alloc\"\npages = 3\n", 3,
     "vmalloc.fix_size_alloc pages: must be one of 1, 4, 16, 64, 256"),
    ("[[workload]]\nname = \"vmalloc.vm_map_ram\"\nloops = \"many\"\n", 3,
     "vmalloc.vm_map_ram loops: expected an integer"),
    ("[kernel]\nlinear_map = \"block\"\nallocator = \"minimal\"\n" + WL, 3,
     "[kernel] allocator: the minimal allocator needs a PTE-mapped linear map"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "needle"), MALFORMED)
def test_malformed_scenario_is_one_line_with_file_and_line_exit_2(
    tmp_path, capsys, text, line, needle
):
    """Each malformed scenario: exit 2, one stderr line 'kpsim run: FILE:LINE: field: problem'."""
    path = write(tmp_path, text, "bad.toml")
    assert main(["run", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.count("\n") == 1, err
    assert err.startswith(f"kpsim run: {path}:{line}: "), err
    assert needle in err, err


def test_unreadable_scenario_is_exit_2(tmp_path, capsys):
    """A missing scenario file names the file, exit 2."""
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "none.toml" in err and "cannot read scenario" in err


def test_override_error_keeps_the_options_message(tmp_path, capsys):
    """A bad command-line value is blamed on the option, not on a scenario line."""
    assert main(["run", write(tmp_path, SMALL), "--cpus", "0"]) == 2
    err = capsys.readouterr().err
    assert "cpus must be between 1 and" in err and "s.toml:" not in err


def test_list_workloads_names_every_registered_workload(capsys):
    """--list-workloads shows each workload with its parameters and defaults."""
    assert main(["run", "--list-workloads", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == set(registry.WORKLOADS)
    fork = {p["name"]: p for p in doc["micromm.fork"]["params"]}
    assert fork["h"]["choices"] == [0, 1] and fork["size"]["kind"] == "size"


def test_series_option_reaches_the_machine_line(tmp_path, capsys):
    """`kpsim run --series v6` and `[kernel] series` both show in the machine line."""
    assert main(["run", write(tmp_path, SMALL), "--series", "v6"]) == 0
    assert "series v6" in capsys.readouterr().out
    text = SMALL.replace("[kernel]", '[kernel]\nseries = "v8"')
    status, doc = run_json(capsys, [write(tmp_path, text, "v8.toml")])
    assert status == 0 and doc["machine"]["series"] == "v8"
    assert main(["run", write(tmp_path, SMALL), "--series", "v9"]) == 2
    assert "unknown series 'v9'" in capsys.readouterr().err


# --------------------------------------------------------------------------- --both-arches


def test_both_arches_runs_the_scenario_on_each_with_its_own_defaults(tmp_path, capsys):
    """``--both-arches``: one document per architecture, each the document ``--arch``
    alone gives (arm64: POE, PTE-mapped linear map, minimal allocator; x86: PKS, block
    direct map, PBA), each pricing its own pkey-register writes (POR_EL1 / IA32_PKRS);
    the status is the worse of the two."""
    path = write(tmp_path, SMALL)
    status, doc = run_json(capsys, [path, "--both-arches"])
    assert status == doc["status"] == 0 and set(doc["arches"]) == {"arm64", "x86"}
    arm, x86 = doc["arches"]["arm64"], doc["arches"]["x86"]
    assert (arm["machine"]["linear_map"], arm["machine"]["allocator"]) == ("pte", "minimal")
    assert x86["machine"]["arch"] == "x86" and x86["machine"]["linear_map"] == "block"
    for d, register in ((arm, "por_write"), (x86, "pkrs_write")):
        for w in d["workloads"]:
            assert w["on"]["counters"][register] > w["off"]["counters"].get(register, 0)
            assert register in w["overhead"]["contributions"]
    _, alone = run_json(capsys, [path, "--arch", "x86"])
    assert [w["overhead"] for w in alone["workloads"]] == [w["overhead"] for w in x86["workloads"]]


def test_both_arches_text_sets_the_overheads_side_by_side(tmp_path, capsys):
    """The text: both machines, and per workload both overheads with their intervals and
    the events each added, named alike (pkey register writes on both); ``--out DIR``
    writes each architecture's files under DIR/arm64 and DIR/x86."""
    path = write(tmp_path, SMALL)
    assert main(["run", path, "--both-arches", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for arch in ("arm64", "x86"):
        run = json.loads((tmp_path / "o" / arch / "run.json").read_text())
        assert run["machine"].get("arch", "arm64") == arch
    assert "arm64 machine" in out and "x86 machine" in out
    row = next(ln for ln in out.splitlines() if "micromm.fork" in ln)
    assert row.count("%") == 2 and row.count("[") == 2 and "pkey register writes +" in row


def test_both_arches_with_arch_is_one_line_exit_2(capsys):
    assert main(["run", "--both-arches", "--arch", "x86"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "kpsim run: --both-arches runs arm64 and x86: it takes no --arch\n"
