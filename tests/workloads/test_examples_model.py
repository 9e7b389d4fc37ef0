"""Every shipped steps file, run on the model alone, gives the deltas its '# expect'
notes derive from pt-lifecycle.md (the host-side twin is in test_host_conformance)."""

import pytest

from kpsim.workloads.simtarget import make_sim_target
from kpsim.workloads.steps import load_steps, run_steps

from .host_support import EXAMPLES, deltas_and_notes, expectations

# Files whose deltas depend on the host's own layout ('any' notes) still run here:
# the model must accept every step the host does.
FILES = sorted(EXAMPLES.glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_model_matches_the_expect_notes(path):
    target = make_sim_target({"memory": "1G", "cpus": 1, "thp": "madvise", "pt_reclaim": True})
    results = run_steps(load_steps(path), target)
    target.close()
    got, want = deltas_and_notes(path, results)
    assert got == want


def test_negative_control_without_pt_reclaim_dontneed_frees_no_pte_table():
    """The same madvise file without PT_RECLAIM: the whole-slot DONTNEED frees nothing,
    so the notes (which assume PT_RECLAIM=y) no longer hold."""
    path = EXAMPLES / "madvise-dontneed.toml"
    target = make_sim_target({"memory": "1G", "cpus": 1, "thp": "madvise", "pt_reclaim": False})
    results = run_steps(load_steps(path), target)
    target.close()
    expected = [d for d, _ in expectations(path)]
    got = [r.delta for r in results]
    assert got != expected
    assert all(g >= 0 for g, r in zip(got, results, strict=True) if r.op == "madvise")
