"""``kpsim reproduce``: real model runs of the series' benchmarks against a published table.

Runs are scaled down (``--size 4M``, few loops) to stay fast; overheads are ratios of
counts that scale with the size, so the directions checked here hold at 1 GiB too.
"""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main
from kpsim.cli.reproduce import ModelRuns
from kpsim.report.cost import default_costs, load_costs, overhead
from kpsim.report.published import load_table

SMALL = ["--size", "4M", "--loops", "20", "--processes", "1"]


@pytest.fixture(scope="module")
def runs() -> ModelRuns:
    return ModelRuns(size=4 << 20, loops=20, processes=1)


def _overheads(runs: ModelRuns, costs=None) -> dict[tuple[str, str], float]:
    costs = costs or default_costs()
    table = load_table("v5-corrected")
    provide = runs.provider(table)
    out = {}
    for row in table.rows:
        for mode in ("batching", "no_batching"):
            got = provide(row, mode)
            assert got is not None
            if row.key != "kernbench/user":
                out[(row.key, mode)] = overhead(got["on"], got["off"], costs)
    return out


def test_directions_the_series_reports(runs):
    """Batching collapses fork's overhead; fix_size_alloc falls with size when batched and
    rises without; vm_map_ram keeps a large overhead in both (default costs, no fit)."""
    ov = _overheads(runs)
    for h in ("h:0", "h:1"):
        assert ov[(f"fork/{h}", "no_batching")] > 100
        assert ov[(f"fork/{h}", "batching")] < ov[(f"fork/{h}", "no_batching")] / 10
    sizes = [1, 4, 16, 64, 256]
    bat = [ov[(f"fix_size_alloc/p:{p},h:0", "batching")] for p in sizes]
    nob = [ov[(f"fix_size_alloc/p:{p},h:0", "no_batching")] for p in sizes]
    assert bat == sorted(bat, reverse=True) and nob == sorted(nob)
    vmr = ov[("vm_map_ram/p:1,h:0", "batching")], ov[("vm_map_ram/p:1,h:0", "no_batching")]
    assert min(vmr) > 10 and vmr[0] > bat[2]


def test_changing_one_cost_moves_only_rows_that_count_it(runs):
    """zap_folio is counted by the mm's zap: raising its cost moves the rows whose
    measured window unmaps pages (munmap, kernbench), nothing else."""
    base = _overheads(runs)
    changed = _overheads(runs, default_costs().replace({"zap_folio": 999.0}))
    for key, value in base.items():
        if key[0].startswith(("munmap/", "kernbench/")):
            assert changed[key] != value, key
        else:
            assert changed[key] == value, key


def test_runs_are_cached_per_configuration(runs):
    """A (workload, parameters, configuration) is run once however many rows need it."""
    n = len(runs.cache)
    _overheads(runs)
    assert len(runs.cache) == n


def test_json_rows_fitted_and_predicted(capsys, tmp_path):
    """--json: rows with benchmark/class/published/modelled/fitted; MAE per mode; costs written."""
    out = tmp_path / "fitted.toml"
    status = main(["reproduce", *SMALL, "--fit", "fork,vmalloc", "--json", "--write-costs",
                   str(out)])  # fmt: skip
    assert status == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["mae_predicted"]) == {"batching", "no_batching"}
    rows = doc["rows"]
    assert len(rows) == 2 * len(load_table("v5-corrected").rows)
    for r in rows:
        assert {"benchmark", "class", "published", "modelled", "fitted"} <= set(r)
        assert r["fitted"] == (r["benchmark"] in ("micromm/fork",)
                               or r["class"].startswith(("fix_size", "random_size")))  # fmt: skip
        assert r["modelled"] is not None
    assert all(isinstance(doc["mae_predicted"][m], float) for m in ("batching", "no_batching"))
    fitted = load_costs(out)
    assert fitted["isb"] == pytest.approx(doc["costs"]["isb"]) != default_costs()["isb"]


def test_table_output_marks_rows_and_reports_mae(capsys):
    status = main(["reproduce", *SMALL, "--table", "v4", "--rows", "fork,munmap,vm_map_ram",
                   "--fit", "munmap,vm_map_ram"])  # fmt: skip
    assert status == 0
    text = capsys.readouterr().out
    assert "table v4" in text and "MAE over predicted rows, batching" in text
    fork = [line for line in text.splitlines() if line.startswith("micromm/fork")]
    assert fork and all("predicted" in line for line in fork)
    assert "not run" in text  # the vmalloc rows left out by --rows


def test_costs_file_is_used(tmp_path, capsys):
    """--costs overrides a default; the fitted parameters start from it."""
    f = tmp_path / "c.toml"
    f.write_text("[costs]\nzap_folio = 5000\n")
    main(["reproduce", *SMALL, "--rows", "munmap,fork", "--fit", "fork", "--json", "--costs",
          str(f)])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["costs"]["zap_folio"] == 5000.0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--table", "v9"], "invalid choice"),
        (["--fit", "nosuch"], "row selection: 'nosuch' names no row"),
        (["--size", "3M"], "--size: must be a multiple of 2M"),
        (["--costs", "/nonexistent/c.toml"], "cannot read cost file"),
        (["--params", "por_wirte"], "unknown cost event 'por_wirte'"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as ex:
        status = main(["reproduce", *SMALL, *argv])
        raise SystemExit(status)
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_cost_the_rows_cannot_determine_is_flagged(capsys):
    """Fitting on vmalloc alone cannot pin set_memory_pkey down (it runs to the fit's
    bound) nor fork_pte_copy+zap_pte (never counted): both are said, not presented as
    fitted. The control: a parameter the rows do determine (por_write+isb) gets no
    warning, and exactly the parameters at a bound are flagged."""
    assert main(["reproduce", *SMALL, "--rows", "vmalloc", "--fit", "vmalloc", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unidentified"] == ["fork_pte_copy+zap_pte"]
    flagged = {w.split(" = ")[0] for w in doc["warnings"] if "bound" in w}
    at_bound = {k for k, v in doc["params"].items() if v <= 0.00101 or v >= 0.99e8}
    assert flagged == at_bound == {"set_memory_pkey"}
    assert 1 < doc["params"]["por_write+isb"] < 1e4
