"""x86 conform against recorded host runs: the x86 model, seeded with the recorded
host child's snapshot, agrees with the recorded x86-64 host at every step of every
committed step file (tools/record_conform.py wrote tests/data/conform/x86/)."""

import json
from pathlib import Path

import pytest

from kpsim.workloads.simtarget import make_sim_target
from kpsim.workloads.snapshot import snapshot_from_json
from kpsim.workloads.steps import load_steps, run_steps

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "data" / "conform" / "x86"
FILES = sorted(RECORDED.glob("*.json"))


def _load(path):
    doc = json.loads(path.read_text())
    return doc, snapshot_from_json(doc["snapshot"], file=str(path))


def _model(doc, snap, *, arch="x86", seed=True):
    """The model side as ``kpsim conform --arch ARCH`` runs it against that host."""
    host = doc["host"]
    target = make_sim_target(
        {
            "arch": arch,
            "memory": "1G",
            "cpus": 1,
            "thp": host["thp"],
            "thp_use_zero_page": host["thp_use_zero_page"],
            "pt_reclaim": host["pt_reclaim"] != "n",
            "seed": snap if seed else None,
        }
    )
    try:
        return run_steps(load_steps(ROOT / doc["steps_file"]), target), target
    finally:
        target.close()


def _side(results):
    return [(r.delta, r.child_delta) for r in results]


def test_every_committed_steps_file_is_recorded():
    """One recording per examples/steps file, from an x86-64 host."""
    stems = {p.stem for p in (ROOT / "examples" / "steps").glob("*.toml")}
    assert {p.stem for p in FILES} == stems
    for path in FILES:
        assert json.loads(path.read_text())["host"]["machine"] == "x86_64", path.name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_x86_model_agrees_with_the_recorded_host_at_every_step(path):
    """Each step's change of VmPTE/4 (and a fork child's) is the host's; so is the
    absolute count after every step (the model starts from the host child's tables)."""
    doc, snap = _load(path)
    results, target = _model(doc, snap)
    assert target.machine.arch.name == "x86"
    host = doc["host_steps"]
    assert _side(results) == [(h["delta"], h["child_delta"]) for h in host]
    assert [r.pt_pages for r in results] == [h["pt_pages"] for h in host]


def test_negative_control_a_fresh_model_disagrees_where_the_layout_decides():
    """Without the snapshot (``--fresh-model``) the kernel-placed mappings land in other
    slots, and the steps whose notes say 'any' disagree with the recorded host."""
    doc, snap = _load(RECORDED / "kernel-placed.json")
    results, _ = _model(doc, snap, seed=False)
    host = [(h["delta"], h["child_delta"]) for h in doc["host_steps"]]
    differ = [i for i, (g, h) in enumerate(zip(_side(results), host, strict=True)) if g != h]
    assert differ, "a fresh model agreed with the host everywhere"
    seeded, _ = _model(doc, snap)
    assert _side(seeded) == host
