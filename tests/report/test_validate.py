"""Cross-validation, baselines and intervals (kpsim.report.validate, issue 13) on the
synthetic world of test_fit: its counts have the series' shapes, its "published"
figures come from known costs, so the method can be checked without the model."""

from __future__ import annotations

import dataclasses

import pytest

from kpsim.errors import InputError
from kpsim.report.fit import collect_counts
from kpsim.report.published import Figure
from kpsim.report.validate import (
    FAMILIES,
    constant_rows,
    cross_validate,
    family,
    interval,
)

from .test_fit import PARAMS, spec, synthetic_counts, synthetic_table


def _counts(table):
    return collect_counts(synthetic_counts, table)


def test_every_row_belongs_to_one_of_the_six_families():
    table = synthetic_table()
    assert {family(r) for r in table.rows} == set(FAMILIES)
    assert family(table.row("fix_size_alloc/p:1,h:0")) == "fix_size_alloc"
    assert family(table.row("random_size_alloc/p:1,h:0")) == "random_size_alloc"


def test_held_out_published_figures_never_reach_their_predictions():
    """Perturbing every published figure of one family changes none of that family's
    held-out predictions (the control: the fits that trained on it do move)."""
    table = synthetic_table(noise=1.0)
    counts = _counts(table)
    a = cross_validate(table, counts, spec("all"))
    rows = tuple(
        dataclasses.replace(
            r,
            with_batching=Figure(r.with_batching.percent + 37.0, "R", "x"),
            without_batching=Figure(r.without_batching.percent * 3 + 11.0, "R", "x"),
        )
        if family(r) == "fork"
        else r
        for r in table.rows
    )
    b = cross_validate(dataclasses.replace(table, rows=rows), counts, spec("all"))
    pa = {(p.key, p.mode): p for p in a.points}
    pb = {(p.key, p.mode): p for p in b.points}
    fork = [k for k in pa if k[0].startswith("fork/")]
    assert fork and all(pa[k].predicted == pb[k].predicted for k in fork)
    assert all(pa[k].published != pb[k].published for k in fork)
    assert a.folds["fork"] == b.folds["fork"]
    assert a.folds["munmap"] != b.folds["munmap"]  # a fold that trained on fork moved


def test_exact_world_is_predicted_exactly_and_beats_every_baseline():
    """With true-cost figures and the right parameters, every held-out row is predicted
    to within rounding, far better than the trivial baselines in the same run."""
    table = synthetic_table()
    cv = cross_validate(table, _counts(table), spec("all"))
    for mode in ("batching", "no_batching"):
        d = cv.mae[mode]["all"]
        assert d["model"] is not None and d["model"] < 0.05
        assert min(d["zero"], d["mean"], d["analogy"]) > 1.0
    assert cv.n_params == len(PARAMS.split(","))
    assert not cv.at_bound


def test_zero_baseline_is_the_mean_absolute_published_figure():
    table = synthetic_table(noise=2.0)
    cv = cross_validate(table, _counts(table), spec("all"))
    for mode in ("batching", "no_batching"):
        pts = [p for p in cv.points if p.mode == mode and p.scored]
        want = sum(abs(p.published) for p in pts) / len(pts)
        assert cv.mae[mode]["all"]["zero"] == pytest.approx(want)
        sig = [p for p in pts if p.significant]
        assert cv.mae[mode]["significant"]["n"] == len(sig)


def test_rows_constant_by_construction_are_not_scored():
    """A row whose ON and OFF counts are equal is 0 % whatever the costs: shown, not
    scored; the control: a row that differs is scored."""
    table = synthetic_table()
    counts = {k: dict(v) for k, v in _counts(table).items()}
    same = {"other_cycles": 1000.0}
    for mode in ("batching", "no_batching"):
        counts["munmap/h:0"][f"on_{mode}"] = same
        counts["munmap/h:0"][f"off_{mode}"] = same
    assert constant_rows(table, counts) == {"munmap/h:0"}
    cv = cross_validate(table, counts, spec("all"))
    assert cv.constant == ("munmap/h:0",)
    scored = {p.key for p in cv.points if p.scored}
    assert "munmap/h:0" not in scored and "munmap/h:1" in scored


def test_interval_is_relative_with_a_noise_floor():
    iv = interval(100.0, 0.5)
    assert (iv.lo, iv.hi) == (pytest.approx(47.5), pytest.approx(152.5))
    iv0 = interval(0.0, 0.5)
    assert (iv0.lo, iv0.hi) == (pytest.approx(-2.5), pytest.approx(2.5))


def test_one_family_is_not_enough():
    table = synthetic_table()
    counts = {k: v for k, v in _counts(table).items() if k.startswith("fork/")}
    with pytest.raises(InputError, match="at least two benchmark families"):
        cross_validate(table, counts, spec("all"))


def test_shipped_calibration_loads_and_bad_calibration_is_input_error():
    from kpsim.report.calibration import calibration, parse_calibration

    cal = calibration()
    assert cal.params and all(v > 0 for v in cal.spread.values())
    with pytest.raises(InputError, match=r"c:2.*spread.no_batching"):
        parse_calibration(
            '[calibration]\nspread = { batching = 1 }\ntable = "t"\nparams = "isb"\n'
            'level = 0.9\ncv_mae_significant = {}\ncommand = ""\nn_rows = 1\n',
            "c",
        )
    with pytest.raises(InputError, match="unknown event"):
        parse_calibration(
            '[calibration]\nspread = { batching = 1, no_batching = 1 }\ntable = "t"\n'
            'params = "isb"\nlevel = 0.9\ncv_mae_significant = {}\ncommand = ""\n'
            "n_rows = 1\n[costs]\nnosuch = 3\n",
            "c",
        )
