"""``kpsim run`` options: --out saves the scenario that ran (overrides applied, and a
re-run of it gives byte-identical --json), --workload without a TOML file, --audit."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from kpsim.cli.main import main

SMALL = """\
# comments are kept when nothing on the command line changes the scenario
seed = 3

[machine]
memory = "256M"
cpus = 1

[kernel]
batching = false

[[workload]]
name = "micromm.fork"
size = "2M"
h = 0
"""


def test_saved_scenario_has_the_overrides_and_reruns_byte_identical(tmp_path, capsys):
    """--cpus 2 --batching --seed 5 are in out/scenario.toml; running it from the same
    place gives the same --json, byte for byte; the original file gives a different one."""
    src = tmp_path / "s.toml"
    src.write_text(SMALL)
    out = tmp_path / "out"
    argv = [str(src), "--cpus", "2", "--batching", "--seed", "5", "--out", str(out), "--json"]
    assert main(["run", *argv]) == 0
    first = capsys.readouterr().out
    saved = (out / "scenario.toml").read_text()
    data = tomllib.loads(saved)
    assert data["machine"] == {"memory": "256M", "cpus": 2}
    assert data["kernel"] == {"batching": True} and data["seed"] == 5
    assert "with --cpus 2 --seed 5 --batching applied" in saved.splitlines()[0]
    assert main(["run", str(src), "--json"]) == 0  # negative control: the file alone differs
    assert capsys.readouterr().out != first
    shutil.copy(out / "scenario.toml", src)  # same path, so the document's path is the same
    assert main(["run", str(src), "--json"]) == 0
    assert capsys.readouterr().out == first


def test_saved_scenario_is_verbatim_without_overrides(tmp_path, capsys):
    """Nothing given on the command line: scenario.toml is the file as written."""
    src = tmp_path / "s.toml"
    src.write_text(SMALL)
    assert main(["run", str(src), "--out", str(tmp_path / "o"), "--json"]) == 0
    capsys.readouterr()
    assert (tmp_path / "o" / "scenario.toml").read_text() == SMALL


def test_workload_option_without_a_file(tmp_path, capsys):
    """--workload NAME:K=V (repeatable) runs on the default machine; the values are typed."""
    argv = ["--workload", "micromm.fork:size=2M,h=0", "--workload", "micromm.munmap:size=4M",
            "--memory", "256M", "--out", str(tmp_path / "o"), "--json"]  # fmt: skip
    assert main(["run", *argv]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"]["path"] == "<command line>"
    assert [(w["name"], w["params"]["size"]) for w in doc["workloads"]] == [
        ("micromm.fork", 2 << 20),
        ("micromm.munmap", 4 << 20),
    ]
    assert doc["workloads"][0]["params"]["h"] == 0
    assert doc["machine"]["memory_bytes"] == 256 << 20 and doc["machine"]["cpus"] == 2
    saved = tomllib.loads((tmp_path / "o" / "scenario.toml").read_text())
    assert saved["workload"][0] == {"name": "micromm.fork", "size": "2M", "h": 0}
    assert saved["machine"] == {"memory": "256M"}


def test_workload_option_replaces_the_files_workloads(tmp_path, capsys):
    """With a scenario file, --workload replaces its [[workload]] tables."""
    src = tmp_path / "s.toml"
    src.write_text(SMALL)
    assert main(["run", str(src), "--workload", "vmalloc.fix_size_alloc:pages=4,loops=2",
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert [w["label"] for w in doc["workloads"]] == ["vmalloc.fix_size_alloc pages=4 loops=2"]


BAD_WORKLOADS = [
    ("micromm.fork:h=2", "--workload micromm.fork:h=2: ", "h: must be one of 0, 1"),
    ("micromm.fork:size", "--workload micromm.fork:size: ", "'size': expected KEY=VALUE"),
    ("micromm.fork:size=2M,size=4M", "--workload micromm.fork:size=2M,size=4M: ", "given twice"),
    (":size=2M", "--workload :size=2M: ", "missing the workload name"),
    ("micromm.frok", "--workload micromm.frok: ", "unknown workload 'micromm.frok'"),
    ("micromm.fork:huge=1", "--workload micromm.fork:huge=1: ", "unknown parameter 'huge'"),
    ("micromm.fork:size=2Q", "--workload micromm.fork:size=2Q: ", "size"),
]


def test_bad_workload_option_is_one_line_exit_2(capsys):
    """Each bad --workload value: exit 2, one stderr line naming the option and the problem."""
    for text, where, needle in BAD_WORKLOADS:
        assert main(["run", "--workload", text]) == 2, text
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith(f"kpsim run: {where}"), captured.err
        assert needle in captured.err, captured.err


def test_audit_option(tmp_path, capsys):
    """--audit none skips the audit and the screen says so; --audit full watches frees."""
    src = tmp_path / "s.toml"
    src.write_text(SMALL)
    assert main(["run", str(src), "--audit", "none"]) == 0
    assert "audit      not run (--audit none)" in capsys.readouterr().out
    assert main(["run", str(src), "--audit", "full", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["audit"] == {"machines": 3, "violations": [], "mode": "full"}
    with pytest.raises(SystemExit) as exc:
        main(["run", str(src), "--audit", "some"])
    assert exc.value.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err
