"""Random steps sequences: the generator, and host and model agreeing on them."""

import json

import pytest

from kpsim.cli.main import main
from kpsim.workloads.host import HostTarget
from kpsim.workloads.simtarget import make_sim_target
from kpsim.workloads.steps import parse_steps
from kpsim.workloads.steps_random import draw, render, run_valid

from .host_support import needs_host


def _model():
    return make_sim_target({"memory": "1G", "cpus": 1, "thp": "madvise", "pt_reclaim": True})


def test_draw_is_deterministic_and_renders_a_valid_file():
    assert draw(7) == draw(7) and draw(7) != draw(8)
    ops = {s.op for s in parse_steps(render(draw(7, 60))).steps}
    assert {"mmap", "touch", "madvise"} <= ops


def test_model_runs_what_remains_after_refused_steps():
    steps, results = run_valid(draw(11), _model)
    assert len(results) == len(steps) > 0
    assert all(r.pt_pages >= 0 for r in results)


@needs_host
@pytest.mark.parametrize("seed", [126, 3])
def test_host_and_model_agree_on_a_random_sequence(seed, tmp_path, capsys):
    """The steps the host accepts, run by kpsim conform: every step agrees."""
    steps, _ = run_valid(draw(seed), HostTarget)
    path = tmp_path / f"r{seed}.toml"
    path.write_text(render(steps))
    code = main(["conform", "--steps", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["mismatches"]) == (0, 0)
