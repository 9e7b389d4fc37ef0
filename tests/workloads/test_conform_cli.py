"""kpsim conform in-process: JSON shape, model missing/present, mismatches, golden text."""

import json
import sys
import types

import pytest

from kpsim.cli.main import main
from kpsim.workloads.snapshot import count_slots

from .host_support import needs_host

SIM = "kpsim.workloads.simtarget"

STEPS = """\
[[step]]
op = "mmap"
name = "A"
addr = "16T"
length = "4M"
flags = ["fixed_noreplace", "noreserve"]

[[step]]
op = "touch"
region = "A"
stride = "2M"

[[step]]
op = "fork"
"""


class LowerBoundSim:
    """A stand-in model: tables = slots of touched pages at each level (no frees)."""

    def __init__(self, skew=0):
        self.pages = []
        self.skew = skew

    def mmap(self, addr, length, prot, flags):
        return addr

    def touch(self, addr, length, stride, write):
        self.pages += [(a, a + 4096) for a in range(addr, addr + length, stride)]

    def munmap(self, addr, length): ...
    def mprotect(self, addr, length, prot): ...
    def madvise(self, addr, length, advice): ...

    def mremap(self, old_addr, old_len, new_len, new_addr):
        return new_addr

    def pt_pages(self):
        n = sum(count_slots(self.pages, s) for s in (21, 30, 39))
        return n + (self.skew if self.pages else 0)

    def fork(self):
        return self.pt_pages()

    def close(self): ...


@pytest.fixture
def steps_file(tmp_path):
    path = tmp_path / "steps.toml"
    path.write_text(STEPS)
    return str(path)


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setitem(sys.modules, SIM, None)  # import fails as for a missing module


def install_model(monkeypatch, skew=0):
    mod = types.ModuleType(SIM)
    seen = []

    def make_sim_target(args):
        seen.append(args)
        return LowerBoundSim(skew)

    mod.make_sim_target = make_sim_target
    monkeypatch.setitem(sys.modules, SIM, mod)
    return seen


def test_sim_only_without_model_exits_2_with_one_line(steps_file, no_model, capsys):
    """--sim-only when kpsim.workloads.simtarget is missing: one clear line, exit 2."""
    assert main(["conform", "--steps", steps_file, "--sim-only"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"kpsim conform: the model side is not available: {SIM} does not exist yet\n"


def test_sim_only_with_model_gives_null_host_fields(steps_file, monkeypatch, capsys):
    """--sim-only runs the model alone: host fields null, match null, exit 0."""
    seen = install_model(monkeypatch)
    assert main(["conform", "--steps", steps_file, "--sim-only", "--json", "--thp", "never"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert seen[0].thp == "never"
    assert doc == {
        "steps": [
            {
                "index": 1,
                "op": "mmap",
                "sim_pt_pages": 0,
                "sim_delta": 0,
                "host_pt_pages": None,
                "host_delta": None,
                "match": None,
            },
            {
                "index": 2,
                "op": "touch",
                "sim_pt_pages": 4,
                "sim_delta": 4,
                "host_pt_pages": None,
                "host_delta": None,
                "match": None,
            },
            {
                "index": 3,
                "op": "fork",
                "sim_pt_pages": 4,
                "sim_delta": 0,
                "host_pt_pages": None,
                "host_delta": None,
                "match": None,
                "child_sim_pt_pages": 4,
                "child_host_pt_pages": None,
            },
        ],
        "mismatches": 0,
    }


GOLDEN_TEXT = """\
step  op     sim_pt_pages  sim_delta  host_pt_pages  host_delta  match  child_sim  child_host
   1  mmap              0         +0              -           -      -          -           -
   2  touch             4         +4              -           -      -          -           -
   3  fork              4         +0              -           -      -     4 (+4)           -
child: the forked child's pages (its change over a child forked before step 1)
"""


def test_sim_only_plain_text_golden(steps_file, monkeypatch, capsys):
    """Piped text output is a plain aligned table (golden)."""
    install_model(monkeypatch)
    assert main(["conform", "--steps", steps_file, "--sim-only"]) == 0
    assert capsys.readouterr().out == GOLDEN_TEXT


@needs_host
def test_host_only_json(steps_file, capsys):
    """--host-only --json: host counts and deltas from the kernel, sim fields null."""
    assert main(["conform", "--steps", steps_file, "--host-only", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mismatches"] == 0
    rows = doc["steps"]
    assert [r["host_delta"] for r in rows] == [0, 4, 0]
    assert all(r["sim_pt_pages"] is None and r["match"] is None for r in rows)
    assert rows[2]["child_host_pt_pages"] >= 4 and rows[2]["child_sim_pt_pages"] is None


@needs_host
def test_both_sides_agree_exit_0(steps_file, monkeypatch, capsys):
    """Model and host agreeing on every delta: match true everywhere, exit 0."""
    install_model(monkeypatch)
    assert main(["conform", "--steps", steps_file, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["match"] for r in doc["steps"]] == [True, True, True]


@needs_host
def test_mismatch_exits_1(steps_file, monkeypatch, capsys):
    """A model that is off by one after the touch: that step mismatches, exit 1."""
    install_model(monkeypatch, skew=1)
    assert main(["conform", "--steps", steps_file, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["mismatches"] == 2  # the touch, and the fork's child
    assert [r["match"] for r in doc["steps"]] == [True, False, False]


@needs_host
def test_default_mode_without_model_says_so(steps_file, no_model, capsys):
    """Without the model, the text output says the model side is not available; exit 0."""
    assert main(["conform", "--steps", steps_file]) == 0
    out = capsys.readouterr().out
    assert "model side not available" in out and "host: Linux" in out


def test_arch_x86_reaches_the_model_side(steps_file, monkeypatch, capsys):
    """``--arch x86`` is passed to make_sim_target (no X86_GAPS refusal)."""
    seen = install_model(monkeypatch)
    assert main(["conform", "--steps", steps_file, "--sim-only", "--arch", "x86"]) == 0
    assert seen[0].arch == "x86"
    assert capsys.readouterr().out == GOLDEN_TEXT


def test_arch_x86_boots_the_x86_model():
    """The real model side with ``arch="x86"`` runs the steps on the x86 machine and
    gives the same deltas as on arm64 (4-level tables, 4K pages on both)."""
    from kpsim.workloads.simtarget import make_sim_target
    from kpsim.workloads.steps import parse_steps, run_steps

    got = {}
    for arch in ("arm64", "x86"):
        target = make_sim_target({"arch": arch, "memory": "1G", "cpus": 1, "thp": "never"})
        assert target.machine.arch.name == arch
        got[arch] = [(r.delta, r.child_delta) for r in run_steps(parse_steps(STEPS), target)]
        target.close()
    assert got["x86"] == got["arm64"] == [(0, None), (4, None), (0, 4)]
