"""Calibration: the fit recovers known costs from synthetic counts and predicts held-out rows.

The synthetic world below proves the method, not the model: its counts are made up
with the shapes of the series' benchmarks, and its "published" figures are computed
from known true costs, so a correct fit must find those costs again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from types import MappingProxyType

import pytest

from kpsim.errors import InputError
from kpsim.report.cost import (
    CostEntry,
    CostTable,
    load_costs,
    overhead,
)
from kpsim.report.fit import (
    CountsError,
    FitSpec,
    fit,
    parse_params,
    reproduce,
)
from kpsim.report.published import MODES, Figure, PublishedRow, PublishedTable, load_table

TRUE = {
    "por_write": 15.0,
    "isb": 60.0,
    "tlbi_va": 150.0,
    "pte_write": 5.0,
    "pgtable_alloc": 400.0,
    "pgtable_free": 200.0,
    "set_memory_pkey": 450.0,
    "set_memory_pkey_page": 20.0,
    "fork_pte_copy": 70.0,
    "zap_pte": 45.0,
    "page_alloc": 150.0,
    "page_free": 100.0,
    "page_fault": 1800.0,
    "vmalloc_page": 60.0,
    "vmalloc_call": 1500.0,
    "vfree_call": 1000.0,
    "vm_map_ram_call": 400.0,
    "vm_unmap_ram_call": 400.0,
    "syscall": 300.0,
    "other_cycles": 1.0,
    "lazy_mmu_sections": 0.0,
}
PARAMS = "por_write+isb,set_memory_pkey,pte_write"
FITTED = {"por_write+isb": 75.0, "set_memory_pkey": 450.0, "pte_write": 5.0}


def table_of(costs: dict[str, float], status: str = "unknown") -> CostTable:
    return CostTable(MappingProxyType({k: CostEntry(k, v, status) for k, v in costs.items()}))


def start_costs() -> CostTable:
    """The truth with every fitted cost wrong; shares of por_write:isb kept at 1:4."""
    wrong = dict(TRUE, por_write=4.0, isb=16.0, set_memory_pkey=2000.0, pte_write=1.0)
    return table_of(wrong)


def _add(*parts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _keyed(tables: float) -> dict[str, float]:
    """The ON-only work of keying ``tables`` page-table pages (alloc or free)."""
    return {"set_memory_pkey": tables, "set_memory_pkey_page": tables, "pte_write": tables,
            "tlbi_va": tables, "por_write": 2 * tables, "isb": 2 * tables}  # fmt: skip


def _switches(n: float) -> dict[str, float]:
    return {"por_write": 2 * n, "isb": 2 * n}


def synthetic_counts(row: PublishedRow, mode: str) -> dict[str, dict[str, float]] | None:
    """Counts for one iteration of the benchmark behind ``row``; None for kernbench."""
    batching = mode == "batching"
    if row.group in ("fork", "munmap"):
        n = 4096
        tables = n / 512
        per = 1.0 if row.params["h"] == 0 else 0.35  # folio batching makes h:1 cheaper
        if row.group == "fork":
            off = {"fork_pte_copy": per * n, "pte_write": 2 * n, "pgtable_alloc": tables,
                   "syscall": 1}  # fmt: skip
            guarded = 2 * n
        else:
            off = {"zap_pte": per * n, "pte_write": n, "pgtable_free": tables, "syscall": 1,
                   "tlbi_va": 1}  # fmt: skip
            guarded = n
        sections = tables + 1
        on = _add(off, _keyed(tables), _switches(sections if batching else guarded))
        return {"off": off, "on": on}
    if row.group in ("vmalloc", "vm_map_ram"):
        p = float(row.params["pages"])
        if row.group == "vm_map_ram":
            off = {"vm_map_ram_call": 1, "vm_unmap_ram_call": 1, "pte_write": 2 * p}
            return {"off": off, "on": _add(off, _switches(2 * p))}
        huge = bool(row.params["huge"])
        tables = 0.02 * p
        off = {"vmalloc_call": 1, "vfree_call": 1, "vmalloc_page": p, "page_alloc": p,
               "page_free": p, "pte_write": (0.1 if huge else 2.0) * p, "tlbi_va": 1,
               "pgtable_alloc": tables}  # fmt: skip
        guarded = (0.1 if huge else 2.0) * p
        on = _add(off, _keyed(tables), _switches(2 if batching else guarded))
        return {"off": off, "on": on}
    return None


def synthetic_table(noise: float = 0.0, seed: int = 0) -> PublishedTable:
    """v5-corrected's rows with 'published' figures made by the true costs (plus noise)."""
    rng = random.Random(seed)
    base = load_table("v5-corrected")
    truth = table_of(TRUE)
    rows = []
    for row in base.rows:
        figs = {}
        for mode in MODES:
            got = synthetic_counts(row, mode)
            pct = 0.0 if got is None else overhead(got["on"], got["off"], truth)
            pct += rng.gauss(0.0, noise) if noise else 0.0
            figs[mode] = Figure(pct, "R", f"(R) {pct:.2f}%")
        rows.append(dataclasses.replace(
            row, with_batching=figs["batching"], without_batching=figs["no_batching"]))  # fmt: skip
    return dataclasses.replace(base, name="synthetic", rows=tuple(rows))


def spec(rows: str, params: str = PARAMS) -> FitSpec:
    return FitSpec(fit_rows=rows, params=params, costs=start_costs())


@pytest.mark.parametrize("rows", ["fork,vmalloc", "munmap,vm_map_ram"])
def test_fit_recovers_true_costs_and_predicts_held_out_rows(rows):
    """Fitting either half of the rows finds the true costs and predicts the other half."""
    result = reproduce(synthetic_counts, synthetic_table(), spec(rows))
    for name, value in FITTED.items():
        assert result.params[name] == pytest.approx(value, rel=1e-5), name
    assert result.costs["por_write"] == pytest.approx(15.0, rel=1e-5)
    assert result.costs["isb"] == pytest.approx(60.0, rel=1e-5)
    for mode in MODES:
        assert result.mae_predicted[mode] == pytest.approx(0.0, abs=1e-4)
    predicted = [r for r in result.rows if not r.fitted and r.modelled is not None]
    assert predicted, "some rows must be predicted"


def test_fit_starts_far_from_truth():
    """Without the fit, the wrong starting costs mispredict the held-out rows badly."""
    table = synthetic_table()
    errors = []
    start = start_costs()
    for row in table.rows:
        got = synthetic_counts(row, "no_batching")
        if got is not None and row.group in ("munmap", "vm_map_ram"):
            errors.append(
                abs(overhead(got["on"], got["off"], start) - row.without_batching.percent)
            )
    assert max(errors) > 5.0


def test_fit_split_marks_rows_fitted_and_predicted():
    """fork,vmalloc fits fork and the vmalloc()/vfree() tests and predicts munmap and vm_map_ram."""
    result = reproduce(synthetic_counts, synthetic_table(), spec("fork,vmalloc"))
    fitted = {r.key for r in result.rows if r.fitted}
    assert "fork/h:0" in fitted and "random_size_alloc/p:1,h:0" in fitted
    assert "munmap/h:0" not in fitted and "vm_map_ram/p:1,h:0" not in fitted
    assert result.fit_rows[0] == "fork/h:0"


def test_noisy_table_gives_nonzero_but_small_error():
    """With noisy published figures the fit stays close and the error is reported, not hidden."""
    result = reproduce(synthetic_counts, synthetic_table(noise=0.5, seed=3), spec("fork,vmalloc"))
    assert result.params["por_write+isb"] == pytest.approx(75.0, rel=0.1)
    mae = result.mae_predicted["batching"]
    assert mae is not None and 0.0 < mae < 5.0


def test_published_figures_of_predicted_rows_never_reach_modelled_values():
    """Changing a predicted row's published figure changes its published column only."""
    table = synthetic_table()
    a = reproduce(synthetic_counts, table, spec("fork,vmalloc"))
    rows = tuple(
        dataclasses.replace(r, with_batching=Figure(99.0, "R", "(R) 99.00%"))
        if r.group == "munmap" else r
        for r in table.rows
    )  # fmt: skip
    b = reproduce(synthetic_counts, dataclasses.replace(table, rows=rows), spec("fork,vmalloc"))
    assert [r.modelled for r in a.rows] == [r.modelled for r in b.rows]
    assert a.params == b.params
    changed = [r for r in b.rows if r.published == 99.0]
    assert changed and all(not r.fitted for r in changed)
    assert b.mae_predicted["batching"] != a.mae_predicted["batching"]


def test_unconstrained_parameter_is_reported_and_left_at_start():
    """page_fault never occurs in fork/vmalloc rows: reported unidentified, kept at its start."""
    result = reproduce(
        synthetic_counts, synthetic_table(), spec("fork,vmalloc", PARAMS + ",page_fault")
    )
    assert result.unidentified == ("page_fault",)
    assert result.params["page_fault"] == pytest.approx(TRUE["page_fault"])
    assert any("page_fault" in w for w in result.warnings)


def test_fitting_every_counted_cost_warns_about_scale():
    """Overheads are ratios: fitting all counted costs leaves the scale free, and says so."""
    every = ",".join(sorted(TRUE))
    counts = {"vm_map_ram/p:1,h:0": {
        "off": {"pte_write": 2, "vm_map_ram_call": 1},
        "on_batching": {"pte_write": 2, "vm_map_ram_call": 1, "isb": 4},
        "on_no_batching": {"pte_write": 2, "vm_map_ram_call": 1, "isb": 4},
    }}  # fmt: skip
    result = fit(load_table("v5-corrected"), counts, spec("vm_map_ram", every))
    assert any("scale" in w for w in result.warnings)


def test_costs_stay_positive_when_the_target_is_negative():
    """A negative published overhead drives the cost to its lower bound, never below zero."""
    counts = {"munmap/h:0": {
        "off": {"zap_pte": 100},
        "on_batching": {"zap_pte": 100, "isb": 2},
        "on_no_batching": {"zap_pte": 100, "isb": 2},
    }}  # fmt: skip
    only_batching = dataclasses.replace(spec("munmap/h:0", "isb"), modes=("batching",))
    result = fit(load_table("v5-corrected"), counts, only_batching)  # published -0.28%
    assert 0 < result.costs["isb"] < 1e-2
    assert all(r.modelled is None or r.modelled >= 0 for r in result.rows)


def test_rows_without_counts_are_shown_but_not_scored():
    """A row the model cannot run has modelled None and stays out of every error figure."""
    result = reproduce(synthetic_counts, synthetic_table(), spec("fork,vmalloc"))
    kern = [r for r in result.rows if r.key.startswith("kernbench/")]
    assert len(kern) == 6 and all(r.modelled is None and r.error is None for r in kern)
    assert len(result.rows) == 2 * len(load_table("v5-corrected").rows)
    assert math.isfinite(result.mae_predicted["no_batching"] or math.nan)


def test_fitted_costs_toml_round_trips(tmp_path):
    """The written cost file loads back to exactly the fitted costs."""
    result = reproduce(synthetic_counts, synthetic_table(), spec("fork,vmalloc"))
    path = tmp_path / "fitted.toml"
    result.write_costs(path)
    loaded = load_costs(path, base=start_costs())
    assert loaded.as_dict() == result.costs.as_dict()
    text = path.read_text()
    assert "Fitted rows: fork/h:0" in text and "por_write+isb" in text


def test_json_has_the_documented_shape():
    """to_json gives rows with benchmark/class/published/modelled/fitted and MAE per mode."""
    doc = reproduce(synthetic_counts, synthetic_table(), spec("fork,vmalloc")).to_json()
    row = doc["rows"][0]
    assert {"benchmark", "class", "published", "modelled", "fitted", "mode"} <= set(row)
    assert set(doc["mae_predicted"]) == {"batching", "no_batching"}
    assert row["class"] == "real time"


def test_modelled_rows_explain_themselves_by_event():
    """Each modelled row carries its top contributing events in percentage points."""
    result = reproduce(synthetic_counts, synthetic_table(), spec("fork,vmalloc"))
    fork = next(r for r in result.rows if r.key == "fork/h:0" and r.mode == "no_batching")
    assert fork.top[0][0] == "isb"
    assert fork.top[0][1] > 0


def test_unknown_fit_event_is_input_error():
    """A fit parameter naming no cost event is rejected with the offending name."""
    with pytest.raises(InputError, match="por_wirte"):
        parse_params("por_wirte+isb", start_costs())


def test_fit_selection_without_counts_is_input_error():
    """Selecting only rows the model cannot run leaves nothing to fit: an InputError."""
    with pytest.raises(InputError, match="nothing to fit"):
        reproduce(synthetic_counts, synthetic_table(), spec("kernbench"))


def test_provider_must_return_on_and_off():
    """A counts provider that forgets 'off' is a CountsError naming the row."""
    with pytest.raises(CountsError, match=r"row kernbench/real \(batching\): need 'on' and 'off'"):
        reproduce(lambda row, mode: {"on": {}}, "v5-corrected", "fork")


def test_negative_count_is_rejected():
    """A negative count is a CountsError, not a silent negative cost."""
    counts = {"fork/h:0": {"off": {"pte_write": -1}, "on_batching": {}, "on_no_batching": {}}}
    with pytest.raises(CountsError, match="pte_write"):
        fit(load_table("v5-corrected"), counts, spec("fork"))


def test_predicted_row_with_free_baseline_is_not_modelled():
    """A predicted row whose off run costs 0 cycles shows modelled None and a warning."""
    counts = {
        "fork/h:0": {"off": {"fork_pte_copy": 10}, "on_batching": {"fork_pte_copy": 10, "isb": 2},
                     "on_no_batching": {"fork_pte_copy": 10, "isb": 20}},
        "munmap/h:0": {"off": {"lazy_mmu_sections": 1}, "on_batching": {"isb": 2},
                       "on_no_batching": {"isb": 2}},
    }  # fmt: skip
    result = fit(load_table("v5-corrected"), counts, spec("fork", "isb"))
    munmap = [r for r in result.rows if r.key == "munmap/h:0"]
    assert all(r.modelled is None for r in munmap)
    assert any("munmap/h:0" in w for w in result.warnings)


def test_only_unconstrained_parameters_leave_costs_at_base():
    """When no fit parameter is ever counted, nothing moves and every parameter is reported."""
    result = reproduce(synthetic_counts, synthetic_table(), spec("fork", "page_fault"))
    assert result.unidentified == ("page_fault",)
    assert result.costs.as_dict() == start_costs().as_dict()


def test_a_prior_pulls_weakly_determined_costs_towards_their_start():
    """MAP with a one-decade log-normal prior: on exact figures the plain fit finds the
    truth, the prior fit stays between start and truth for the weakly determined
    pte_write (start 1, truth 5) and near the truth for por_write+isb."""
    table = synthetic_table()
    plain = reproduce(synthetic_counts, table, spec("fork,vmalloc"))
    prior = reproduce(
        synthetic_counts, table, dataclasses.replace(spec("fork,vmalloc"), prior_decades=1.0)
    )
    assert plain.params["pte_write"] == pytest.approx(FITTED["pte_write"], rel=1e-3)
    assert 1.0 <= prior.params["pte_write"] < FITTED["pte_write"]
    assert prior.params["por_write+isb"] == pytest.approx(FITTED["por_write+isb"], rel=0.2)
