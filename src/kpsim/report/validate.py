"""Honest validation of the cost model: leave-one-family-out cross-validation, trivial
baselines and intervals from the held-out residuals (issue 13).

Models no kernel code. The published rows fall into benchmark families (``FAMILIES``:
kernbench, fork, munmap, fix_size_alloc, random_size_alloc, vm_map_ram). For each
family the fit (:func:`kpsim.report.fit.fit`, the same parameters and base costs)
is made on every *other* family's rows, both columns (with and without lazy-MMU
batching) at once, and predicts the held-out family's rows: the prediction of a row
never sees its own published figure, nor any figure of its family. Rows whose modelled
overhead is constant by construction (their ON and OFF counts are equal, e.g.
kernbench's user time) are shown but not scored.

Next to the model, in the same run and on the same folds, three trivial predictors:
``zero`` (always 0 %), ``mean`` (the mean published figure of the training rows, per
column) and ``analogy`` (the published figure of the training row whose overhead
under the prior costs is nearest to the held-out row's). The model is worth quoting
only if it beats them clearly.

Intervals: an overhead ``x`` in column ``m`` is given as ``x ± q_m·(|x| + 5 pp)``,
where ``q_m`` is the ``LEVEL`` quantile of the held-out relative residuals
``|published − predicted| / (|predicted| + 5 pp)`` of column ``m`` (the relative form
with a noise floor because the errors grow with the size of the figure, as the fit's
weights assume). Coverage is checked honestly: each family's interval scale comes
from the residuals of the other families only (``coverage``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kpsim.errors import InputError
from kpsim.report.cost import CostTable, ZeroBaselineError, default_costs, overhead
from kpsim.report.fit import (
    MAX_CYCLES,
    MIN_CYCLES,
    NOISE_FLOOR_PP,
    FitResult,
    FitSpec,
    RowCounts,
    fit,
    parse_params,
)
from kpsim.report.published import MODES, Mode, PublishedRow, PublishedTable

__all__ = [
    "BASELINES",
    "FAMILIES",
    "LEVEL",
    "CVPoint",
    "CVResult",
    "Interval",
    "constant_rows",
    "cross_validate",
    "family",
    "interval",
    "score",
]

FAMILIES: Final[tuple[str, ...]] = (
    "kernbench",
    "fork",
    "munmap",
    "fix_size_alloc",
    "random_size_alloc",
    "vm_map_ram",
)
BASELINES: Final[tuple[str, ...]] = ("zero", "mean", "analogy")
#: The quantile of the held-out relative residuals an interval spans.
LEVEL: Final = 0.95


def family(row: PublishedRow) -> str:
    """The benchmark family of a row: its test for test_vmalloc, else its group."""
    return row.test if row.group == "vmalloc" else row.group


def constant_rows(table: PublishedTable, counts: Mapping[str, RowCounts]) -> frozenset[str]:
    """Rows constant by construction: in every column the ON and OFF counts are equal,
    so the modelled overhead is 0 % whatever the costs (not a prediction)."""
    out = set()
    for row in table.rows:
        rc = counts.get(row.key)
        if rc is None:
            continue
        same = True
        for mode in MODES:
            on, off = rc.get(f"on_{mode}"), rc.get(f"off_{mode}", rc.get("off"))
            if on is None or off is None or dict(on) != dict(off):
                same = False
        if same:
            out.add(row.key)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimated overhead in percent with its interval (``lo`` <= ``percent`` <= ``hi``)."""

    percent: float
    lo: float
    hi: float
    level: float
    basis: str

    def as_json(self) -> dict[str, Any]:
        return {
            "percent": round(self.percent, 4),
            "lo": round(self.lo, 4),
            "hi": round(self.hi, 4),
            "level": self.level,
            "basis": self.basis,
        }

    def text(self) -> str:
        return f"{self.percent:+.2f}% [{self.lo:+.1f}, {self.hi:+.1f}]"


def interval(percent: float, spread: float, level: float = LEVEL, basis: str = "") -> Interval:
    """``percent ± spread·(|percent| + 5 pp)``: the interval of an estimated overhead
    given the relative spread of its column (``CVResult.spread`` or the shipped
    calibration's, :func:`kpsim.report.calibration.overhead_interval`)."""
    half = spread * (abs(percent) + NOISE_FLOOR_PP)
    return Interval(percent, percent - half, percent + half, level, basis)


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)


def _rel(published: float, predicted: float) -> float:
    return abs(published - predicted) / (abs(predicted) + NOISE_FLOOR_PP)


@dataclass(frozen=True, slots=True)
class CVPoint:
    """One held-out (row, column): the published figure, the model's prediction from a
    fit that never saw its family, the full fit's value and the trivial baselines."""

    key: str
    family: str
    mode: Mode
    published: float
    significant: bool
    predicted: float | None
    full: float | None
    baselines: Mapping[str, float]
    scored: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "family": self.family,
            "mode": self.mode,
            "published": self.published,
            "significant": self.significant,
            "scored": self.scored,
            "predicted": _r(self.predicted),
            "error": _r(None if self.predicted is None else self.predicted - self.published),
            "full_fit": _r(self.full),
            "baselines": {k: _r(v) for k, v in self.baselines.items()},
        }


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


@dataclass(frozen=True, slots=True)
class CVResult:
    """Cross-validation of one fit configuration on one table."""

    table: str
    params: tuple[str, ...]
    points: tuple[CVPoint, ...]
    folds: Mapping[str, Mapping[str, float]]
    full: FitResult
    mae: Mapping[str, Mapping[str, Mapping[str, float | None]]]
    spread: Mapping[str, float]
    coverage: Mapping[str, float | None]
    n_rows: Mapping[str, int]
    at_bound: tuple[str, ...]
    constant: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_params(self) -> int:
        return len(self.params)

    def interval(self, percent: float, mode: Mode) -> Interval:
        return interval(percent, self.spread[mode], LEVEL, f"cross-validation on {self.table}")

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "parameters": list(self.params),
            "n_parameters": self.n_params,
            "n_rows": dict(self.n_rows),
            "folds": {f: {k: _r(v) for k, v in p.items()} for f, p in self.folds.items()},
            "full_fit": {k: _r(v) for k, v in self.full.params.items()},
            "mae": {
                col: {sub: {k: _r(v) for k, v in d.items()} for sub, d in subs.items()}
                for col, subs in self.mae.items()
            },
            "interval_level": LEVEL,
            "spread": {k: _r(v) for k, v in self.spread.items()},
            "coverage": {k: _r(v) for k, v in self.coverage.items()},
            "at_bound": list(self.at_bound),
            "constant_rows": list(self.constant),
            "points": [p.as_json() for p in self.points],
            "warnings": list(self.warnings),
        }


def score(points: Sequence[CVPoint]) -> dict[str, dict[str, dict[str, float | None]]]:
    """MAE (pp) of the model and of each baseline, per column, on significant and on all
    scored points."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for mode in MODES:
        out[mode] = {}
        for sub in ("significant", "all"):
            pts = [p for p in points if p.scored and p.mode == mode]
            if sub == "significant":
                pts = [p for p in pts if p.significant]
            row: dict[str, float | None] = {}
            preds = [p for p in pts if p.predicted is not None]
            row["model"] = _mean(
                [abs(p.predicted - p.published) for p in preds if p.predicted is not None]
            )
            for b in BASELINES:
                row[b] = _mean([abs(p.baselines[b] - p.published) for p in pts])
            row["n"] = float(len(pts))
            out[mode][sub] = row
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def _prior_overheads(
    table: PublishedTable, counts: Mapping[str, RowCounts], prior: CostTable
) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for row in table.rows:
        rc = counts.get(row.key)
        for mode in MODES:
            on = None if rc is None else rc.get(f"on_{mode}")
            off = None if rc is None else rc.get(f"off_{mode}", rc.get("off"))
            if on is None or off is None:
                continue
            try:
                out[(row.key, mode)] = overhead(on, off, prior)
            except ZeroBaselineError:
                continue
    return out


def cross_validate(
    table: PublishedTable, counts: Mapping[str, RowCounts], spec: FitSpec
) -> CVResult:
    """Leave-one-family-out cross-validation of ``spec.params`` on ``table``.

    ``spec.fit_rows`` is ignored: each fold fits on every other family. ``counts`` are
    per row key as :func:`kpsim.report.fit.fit` takes them.
    """
    base = default_costs() if spec.costs is None else spec.costs
    params = parse_params(spec.params, base)
    constant = constant_rows(table, counts)
    fams = {row.key: family(row) for row in table.rows}
    present = [f for f in FAMILIES if any(fams[k] == f and k in counts for k in fams)]
    if len(present) < 2:
        raise InputError("cross-validation needs counts for at least two benchmark families")
    drop = "".join(f",-{k}" for k in sorted(constant))
    prior = _prior_overheads(table, counts, base)
    points: list[CVPoint] = []
    folds: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    at_bound: set[str] = set()
    full = fit(table, counts, FitSpec("all" + drop, spec.params, base, spec.modes,
                                      spec.prior_decades))  # fmt: skip
    full_mod = {(r.key, r.mode): r.modelled for r in full.rows}
    _bounds(full.params, "full fit", at_bound)
    for fam in present:
        res = fit(table, counts, FitSpec(f"all,-{fam}{drop}", spec.params, base, spec.modes,
                                         spec.prior_decades))  # fmt: skip
        folds[fam] = dict(res.params)
        _bounds(res.params, f"fold {fam}", at_bound)
        warnings += [f"fold {fam}: {w}" for w in res.warnings if "bound" not in w]
        train = [r for r in res.rows if r.fitted and r.modelled is not None]
        for r in res.rows:
            if fams[r.key] != fam:
                continue
            pool = [t for t in train if t.mode == r.mode]
            mean = _mean([t.published for t in pool]) or 0.0
            analogy = mean
            mine = prior.get((r.key, r.mode))
            cands = [(abs(prior[(t.key, t.mode)] - mine), t.key, t.published) for t in pool
                     if mine is not None and (t.key, t.mode) in prior]  # fmt: skip
            if cands:
                analogy = min(cands)[2]
            points.append(CVPoint(
                key=r.key, family=fam, mode=r.mode, published=r.published,
                significant=r.mark != "", predicted=r.modelled,
                full=full_mod.get((r.key, r.mode)),
                baselines={"zero": 0.0, "mean": mean, "analogy": analogy},
                scored=r.key not in constant and r.modelled is not None,
            ))  # fmt: skip
    order = {(k, m): i for i, k in enumerate(table.keys) for m in MODES}
    points.sort(key=lambda p: order[(p.key, p.mode)])
    spread: dict[str, float] = {}
    coverage: dict[str, float | None] = {}
    n_rows: dict[str, int] = {}
    for mode in MODES:
        pts = [p for p in points if p.scored and p.mode == mode and p.predicted is not None]
        n_rows[mode] = len(pts)
        spread[mode] = _quantile([_rel(p.published, p.predicted) for p in pts
                                  if p.predicted is not None], LEVEL)  # fmt: skip
        coverage[mode] = _coverage(pts)
    return CVResult(
        table=table.name,
        params=tuple(p.name for p in params),
        points=tuple(points),
        folds=folds,
        full=full,
        mae=score(points),
        spread=spread,
        coverage=coverage,
        n_rows=n_rows,
        at_bound=tuple(sorted(at_bound)),
        constant=tuple(k for k in table.keys if k in constant),
        warnings=tuple(warnings),
    )


def _bounds(values: Mapping[str, float], where: str, out: set[str]) -> None:
    for name, v in values.items():
        if v <= MIN_CYCLES * 1.01 or v >= MAX_CYCLES / 1.01:
            out.add(f"{where}: {name}")


def _coverage(pts: Sequence[CVPoint]) -> float | None:
    """The share of held-out points inside their interval, each family's interval scale
    taken from the other families' held-out residuals only."""
    inside = total = 0
    for fam in {p.family for p in pts}:
        others = [_rel(p.published, p.predicted) for p in pts
                  if p.family != fam and p.predicted is not None]  # fmt: skip
        if not others:
            continue
        q = _quantile(others, LEVEL)
        for p in pts:
            if p.family == fam and p.predicted is not None:
                iv = interval(p.predicted, q)
                total += 1
                inside += iv.lo <= p.published <= iv.hi
    return inside / total if total else None
