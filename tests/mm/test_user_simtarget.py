"""The conform StepTarget on the model and the §4 present-page predictor."""

from __future__ import annotations

from kpsim.workloads.simtarget import make_sim_target, model_pt_pages_for_present

T, G, M = 1 << 40, 1 << 30, 1 << 20


def test_simtarget_runs_the_measured_steps():
    """S1 and S2 through the StepTarget give +514 and +33; a fork reports the child's count."""
    t = make_sim_target({"memory": "1G"})
    flags = frozenset({"fixed_noreplace", "noreserve"})
    b = t.pt_pages()
    r1 = t.mmap(16 * T, G, "rw", flags)
    t.touch(r1, G, 2 * M, True)
    assert t.pt_pages() - b == 514
    r2 = t.mmap(16 * T + G, 64 * M, "rw", flags)
    t.touch(r2, 64 * M, 4096, True)
    assert t.pt_pages() - b == 514 + 33
    assert t.fork() == t.pt_pages()
    t.close()


def test_predictor_counts_distinct_slots():
    """The predictor counts distinct 2M, 1G and 512G slots of the present ranges."""
    assert model_pt_pages_for_present([]) == 0
    assert model_pt_pages_for_present([(16 * T, 16 * T + 4096)]) == 3
    assert model_pt_pages_for_present([(16 * T, 16 * T + G)]) == 514
    assert model_pt_pages_for_present([(0, 4096), (4096, 8192), (2 * M, 2 * M + 1)]) == 4
