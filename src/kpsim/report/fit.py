"""Honest calibration of the cost model against a published table (issue 7, item 4).

Models no kernel code. The series never published absolute costs (spec §8 item 6),
only relative overheads. So the unknown costs are *fitted* on a named subset of the
published rows and the model then *predicts* the others; the mean absolute error
over the predicted rows is the honest measure of the explanation.

Method: each fit parameter is a group of events (``por_write+isb``) whose costs keep
their default proportions and scale together; the parameter is the group's summed
cost in cycles. Parameters are fitted in log space (so they stay positive, bounded
to [1e-3, 1e8] cycles) by Levenberg-Marquardt least squares on
(modelled - published) percentage points over the fitted (row, mode) points, from
several starts; each residual is weighted by 1 / (|published| + 5 pp), i.e. relative
error with a noise floor (see ``_weights``). A parameter whose events the fitted rows
never count is not fitted: it keeps its base cost and is reported. Overheads are
ratios, so they fix costs only relative to the costs that are not fitted: at least one
counted cost must stay fixed to anchor the scale.

Published figures enter only as the fit target and the "published" column; modelled
figures come only from counts times costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kpsim.errors import InputError, KpsimError
from kpsim.report.cost import (
    CostTable,
    ZeroBaselineError,
    costs_toml,
    default_costs,
    overhead_breakdown,
)
from kpsim.report.published import (
    MODES,
    Mode,
    PublishedRow,
    PublishedTable,
    load_table,
    select_rows,
)

__all__ = [
    "DEFAULT_FIT_ROWS",
    "DEFAULT_PARAMS",
    "CountsError",
    "CountsProvider",
    "FitParam",
    "FitResult",
    "FitSpec",
    "ReproRow",
    "collect_counts",
    "evaluate",
    "fit",
    "parse_params",
    "reproduce",
]

Counts = Mapping[str, float]
#: Per row key: {"off": counts, "on_batching": counts, "on_no_batching": counts};
#: "off_batching"/"off_no_batching" replace "off" for one mode if present.
RowCounts = Mapping[str, Counts]
#: (row, mode) -> {"off": counts, "on": counts}, or None if the model cannot run it.
CountsProvider = Callable[[PublishedRow, Mode], Mapping[str, Counts] | None]
Array = npt.NDArray[np.float64]

DEFAULT_FIT_ROWS: Final = "fork,vmalloc"
DEFAULT_PARAMS: Final = (
    "por_write+isb,set_memory_pkey,fork_pte_copy+zap_pte,vmalloc+vfree+vm_map_ram+vm_unmap_ram"
)
NOISE_FLOOR_PP: Final = 5.0
MIN_CYCLES: Final = 1e-3
MAX_CYCLES: Final = 1e8
_MAX_ITER: Final = 200
_TOP: Final = 3


class CountsError(KpsimError, ValueError):
    """The counts handed to the fit are malformed (a machine-side bug, not user input)."""


@dataclass(frozen=True, slots=True)
class FitParam:
    """One fitted unknown: events whose costs scale together, with their default shares."""

    name: str
    events: tuple[str, ...]
    shares: tuple[float, ...]
    initial: float


def parse_params(text: str, costs: CostTable) -> tuple[FitParam, ...]:
    """Parse ``"por_write+isb,set_memory_pkey"`` into fit parameters over ``costs``."""
    params: list[FitParam] = []
    seen: set[str] = set()
    for group in (g.strip() for g in text.split(",")):
        if not group:
            continue
        events = tuple(e.strip() for e in group.split("+"))
        for e in events:
            if e not in costs:
                raise InputError(f"fit parameter {group!r}: unknown cost event {e!r}")
            if e in seen:
                raise InputError(f"fit parameter {group!r}: {e!r} is already fitted")
            seen.add(e)
        total = math.fsum(costs[e] for e in events)
        shares = tuple(costs[e] / total if total > 0 else 1 / len(events) for e in events)
        initial = min(max(total if total > 0 else 1.0, MIN_CYCLES), MAX_CYCLES)
        params.append(FitParam("+".join(events), events, shares, initial))
    if not params:
        raise InputError("no fit parameters given (e.g. 'por_write+isb,set_memory_pkey')")
    return tuple(params)


@dataclass(frozen=True, slots=True)
class FitSpec:
    """What to fit: which rows (``--fit``), which costs, from which base, on which modes."""

    fit_rows: str = DEFAULT_FIT_ROWS
    params: str = DEFAULT_PARAMS
    costs: CostTable | None = None
    modes: tuple[Mode, ...] = MODES
    #: a log-normal prior on each parameter, centred on its base cost, with this many
    #: decades as one standard deviation (None: no prior, plain least squares)
    prior_decades: float | None = None


@dataclass(frozen=True, slots=True)
class ReproRow:
    """One (row, mode): published next to modelled, and whether it was fitted."""

    key: str
    benchmark: str
    result_class: str
    mode: Mode
    published: float
    mark: str
    modelled: float | None
    fitted: bool
    top: tuple[tuple[str, float], ...] = ()

    @property
    def error(self) -> float | None:
        return None if self.modelled is None else self.modelled - self.published

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "class": self.result_class,
            "key": self.key,
            "mode": self.mode,
            "published": self.published,
            "significant": self.mark != "",
            "modelled": _round(self.modelled),
            "error": _round(self.error),
            "fitted": self.fitted,
            "top": [[name, _round(pp)] for name, pp in self.top],
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass(frozen=True, slots=True)
class FitResult:
    """The calibration: fitted costs, every row side by side, and the held-out error."""

    table: str
    fit_rows: tuple[str, ...]
    params: Mapping[str, float]
    initial: Mapping[str, float]
    costs: CostTable
    rows: tuple[ReproRow, ...]
    mae_predicted: Mapping[str, float | None]
    mae_predicted_significant: Mapping[str, float | None]
    mae_fitted: Mapping[str, float | None]
    iterations: int
    unidentified: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "fit_rows": list(self.fit_rows),
            "params": {k: _round(v) for k, v in self.params.items()},
            "rows": [r.as_json() for r in self.rows],
            "mae_predicted": {k: _round(v) for k, v in self.mae_predicted.items()},
            "mae_predicted_significant": {
                k: _round(v) for k, v in self.mae_predicted_significant.items()
            },
            "mae_fitted": {k: _round(v) for k, v in self.mae_fitted.items()},
            "costs": self.costs.as_dict(),
            "unidentified": list(self.unidentified),
            "warnings": list(self.warnings),
        }

    def costs_toml(self) -> str:
        """The fitted cost table as a cost file (``kpsim.report.cost.load_costs`` reads it)."""
        mae = ", ".join(f"{m} {_fmt(v)}" for m, v in self.mae_predicted.items())
        header = [
            f"Costs fitted by kpsim reproduce against published table {self.table}.",
            f"Fitted rows: {', '.join(self.fit_rows)}.",
            *(f"Parameter {k} = {v:.6g} cycles (start {self.initial[k]:.6g})"
              for k, v in self.params.items()),
            f"Mean absolute error over predicted rows (pp): {mae}.",
            *(f"Warning: {w}" for w in self.warnings),
        ]  # fmt: skip
        return costs_toml(self.costs, header)

    def write_costs(self, path: str | Path) -> None:
        try:
            Path(path).write_text(self.costs_toml(), encoding="utf-8")
        except OSError as err:
            raise InputError(f"cannot write costs: {err.strerror or err}", file=str(path)) from None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# --------------------------------------------------------------------------- points


@dataclass(frozen=True, slots=True)
class _Point:
    row: PublishedRow
    mode: Mode
    on: Counts
    off: Counts
    fitted: bool


def _points(
    table: PublishedTable, counts: Mapping[str, RowCounts], fit_keys: frozenset[str],
    modes: Sequence[Mode],
) -> tuple[list[_Point], list[ReproRow]]:  # fmt: skip
    """The modelled (row, mode) points, and the rows the counts do not cover."""
    points: list[_Point] = []
    missing: list[ReproRow] = []
    for row in table.rows:
        rc = counts.get(row.key)
        for mode in MODES:
            on = None if rc is None else rc.get(f"on_{mode}")
            off = None if rc is None else rc.get(f"off_{mode}", rc.get("off"))
            fitted = row.key in fit_keys and mode in modes
            if on is None or off is None:
                missing.append(_repro_row(row, mode, None, fitted=False))
                continue
            points.append(_Point(row, mode, _check(row.key, on), _check(row.key, off), fitted))
    return points, missing


def _check(key: str, counts: Counts) -> Counts:
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int | float) or not n >= 0:
            raise CountsError(f"counts for row {key}: {name} = {n!r} is not a count")
    return counts


def _repro_row(
    row: PublishedRow, mode: Mode, modelled: float | None, *, fitted: bool,
    top: Iterable[tuple[str, float]] = (),
) -> ReproRow:  # fmt: skip
    fig = row.figure(mode)
    return ReproRow(row.key, row.benchmark, row.result_class, mode, fig.percent, fig.mark,
                    modelled, fitted, tuple(top))  # fmt: skip


# --------------------------------------------------------------------------- the solver


@dataclass(slots=True)
class _Problem:
    """The fitted points as matrices: cost vector c(u) and modelled overheads m(c)."""

    on: Array
    off: Array
    target: Array
    base: Array
    members: list[tuple[npt.NDArray[np.intp], Array]]
    weight: Array
    #: log-space prior: centre (the parameters' starting costs) and the weight 1/sd of a
    #: residual (u - centre) / sd per parameter; sd = 0 (no prior) when ``prior`` is None
    prior: Array | None = None
    prior_weight: float = 0.0

    def costs(self, u: Array) -> Array:
        c = self.base.copy()
        for (idx, shares), ug in zip(self.members, u, strict=True):
            c[idx] = math.exp(ug) * shares
        return c

    def residuals(self, u: Array) -> tuple[Array, Array]:
        """Residuals (pp) at ``u`` and their Jacobian with respect to ``u``."""
        c = self.costs(u)
        a, b = self.on @ c, self.off @ c
        r = (100.0 * (a / b - 1.0) - self.target) * self.weight
        dm_dc = 100.0 * (self.on * b[:, None] - self.off * a[:, None]) / (b * b)[:, None]
        dm_dc *= self.weight[:, None]
        jac = np.empty((len(r), len(self.members)))
        for k, (idx, _) in enumerate(self.members):
            jac[:, k] = dm_dc[:, idx] @ c[idx]
        if self.prior is not None and self.prior_weight > 0:
            r = np.concatenate([r, (u - self.prior) * self.prior_weight])
            jac = np.vstack([jac, np.eye(len(u)) * self.prior_weight])
        return r, jac


def _levenberg_marquardt(p: _Problem, u0: Array) -> tuple[Array, float, int]:
    lo, hi = math.log(MIN_CYCLES), math.log(MAX_CYCLES)
    u = np.clip(u0, lo, hi)
    r, jac = p.residuals(u)
    sse, lam = float(r @ r), 1e-3
    for it in range(1, _MAX_ITER + 1):
        h = jac.T @ jac
        d = np.diag(h).copy()
        d[d <= 0] = 1.0
        step = np.linalg.lstsq(h + lam * np.diag(d), -(jac.T @ r), rcond=None)[0]
        u_new = np.clip(u + step, lo, hi)
        r_new, jac_new = p.residuals(u_new)
        sse_new = float(r_new @ r_new)
        if sse_new < sse:
            done = sse - sse_new <= 1e-15 * (1.0 + sse)
            u, r, jac, sse, lam = u_new, r_new, jac_new, sse_new, max(lam / 3, 1e-12)
            if done:
                return u, sse, it
        else:
            lam *= 4.0
            if lam > 1e12:
                return u, sse, it
    return u, sse, _MAX_ITER


def _solve(p: _Problem, u0: Array) -> tuple[Array, int]:
    """The best of several LM runs: from the defaults and a decade either side of each."""
    if not len(u0):
        return u0, 0
    starts = [u0, u0 + math.log(10), u0 - math.log(10)]
    for k in range(len(u0)):
        for s in (math.log(10), -math.log(10)):
            u = u0.copy()
            u[k] += s
            starts.append(u)
    best: tuple[Array, float, int] | None = None
    total = 0
    for start in starts:
        u, sse, its = _levenberg_marquardt(p, start)
        total += its
        if best is None or sse < best[1] - 1e-12 * (1 + best[1]):
            best = (u, sse, its)
    assert best is not None
    return best[0], total


# --------------------------------------------------------------------------- fit


def fit(table: PublishedTable, counts: Mapping[str, RowCounts], spec: FitSpec) -> FitResult:
    """Fit ``spec.params`` on the rows ``spec.fit_rows`` selects; predict the others."""
    base = default_costs() if spec.costs is None else spec.costs
    params = parse_params(spec.params, base)
    fit_keys = select_rows(table, spec.fit_rows)
    points, missing = _points(table, counts, fit_keys, spec.modes)
    fitted = [pt for pt in points if pt.fitted]
    if not fitted:
        raise InputError(f"no counts for any fitted row ({spec.fit_rows}): nothing to fit")
    free = [
        p for p in params if any(pt.on.get(e) or pt.off.get(e) for pt in fitted for e in p.events)
    ]
    unidentified = tuple(p.name for p in params if p not in free)
    problem, events = _problem(fitted, free, base)
    u0 = np.array([math.log(p.initial) for p in free])
    if spec.prior_decades is not None and spec.prior_decades > 0:
        problem.prior = u0.copy()
        problem.prior_weight = 1.0 / (spec.prior_decades * math.log(10))
    u, iterations = _solve(problem, u0)
    values = {p.name: math.fsum(base[e] for e in p.events) for p in params}
    values.update({p.name: math.exp(float(ug)) for p, ug in zip(free, u, strict=True)})
    updates = {e: values[p.name] * s for p in free for e, s in zip(p.events, p.shares, strict=True)}
    costs = base.replace(updates, status="fitted")
    rows = _rows(table, points, missing, costs)
    warnings = _warnings(fitted, params, events, base, unidentified)
    warnings += tuple(
        f"{p.name} = {values[p.name]:.4g} cycles sits at the fit's "
        f"{'lower' if values[p.name] < 1 else 'upper'} bound: the fitted rows do not "
        "determine it (they prefer it as small/large as allowed); treat it as unknown"
        for p in free
        if values[p.name] <= MIN_CYCLES * 1.01 or values[p.name] >= MAX_CYCLES / 1.01
    )
    return FitResult(
        table=table.name,
        fit_rows=tuple(k for k in table.keys if k in fit_keys),
        params=values,
        initial={p.name: p.initial for p in params},
        costs=costs,
        rows=tuple(rows),
        mae_predicted=_mae(rows, fitted=False),
        mae_predicted_significant=_mae(rows, fitted=False, significant=True),
        mae_fitted=_mae(rows, fitted=True),
        iterations=iterations,
        unidentified=unidentified,
        warnings=warnings + tuple(
            f"row {r.key} ({r.mode}): the feature-off run costs 0 cycles, not modelled"
            for r in rows if r.modelled is None and r not in missing
        ),
    )  # fmt: skip


def _rows(
    table: PublishedTable, points: Sequence[_Point], missing: Sequence[ReproRow], costs: CostTable
) -> list[ReproRow]:
    """Every (row, mode) in table order: modelled points and the rows without counts."""
    rows = [_model_row(pt, costs) for pt in points] + list(missing)
    order = {(k, m): i for i, k in enumerate(table.keys) for m in MODES}
    rows.sort(key=lambda r: order[(r.key, r.mode)])
    return rows


def _problem(
    fitted: Sequence[_Point], params: Sequence[FitParam], base: CostTable
) -> tuple[_Problem, list[str]]:
    events = sorted({e for pt in fitted for e in (*pt.on, *pt.off)} | {
        e for p in params for e in p.events})  # fmt: skip
    col = {e: i for i, e in enumerate(events)}
    on, off = np.zeros((len(fitted), len(events))), np.zeros((len(fitted), len(events)))
    for i, pt in enumerate(fitted):
        for e, n in pt.on.items():
            on[i, col[e]] = n
        for e, n in pt.off.items():
            off[i, col[e]] = n
    members = [(np.array([col[e] for e in p.events], dtype=np.intp), np.array(p.shares))
               for p in params]  # fmt: skip
    target = np.array([pt.row.figure(pt.mode).percent for pt in fitted])
    problem = _Problem(on, off, target, np.array([base[e] for e in events]), members,
                       _weights(target))  # fmt: skip
    start = problem.costs(np.array([math.log(p.initial) for p in params]))
    for pt, b in zip(fitted, off @ start, strict=True):
        if b <= 0:
            raise CountsError(f"row {pt.row.key} ({pt.mode}): the feature-off run costs 0 cycles")
    return problem, events


def _weights(target: Array) -> Array:
    """Relative residuals with a noise floor: weight 1 / (|published| + NOISE_FLOOR_PP).

    The series' figures span -2 % to 283 %; their run-to-run noise grows with their size
    (a relative error), and a figure near zero is within noise. Plain absolute residuals
    would let the few 200 % rows decide every cost; these weights give each row a
    comparable say, the near-zero ones no more than a 5 pp figure.
    """
    return 1.0 / (np.abs(target) + NOISE_FLOOR_PP)


def _model_row(pt: _Point, costs: CostTable) -> ReproRow:
    try:
        ov = overhead_breakdown(pt.on, pt.off, costs)
    except ZeroBaselineError:
        return _repro_row(pt.row, pt.mode, None, fitted=pt.fitted)
    return _repro_row(pt.row, pt.mode, ov.percent, fitted=pt.fitted, top=ov.top(_TOP))


def _warnings(
    fitted: Sequence[_Point], params: Sequence[FitParam], events: Sequence[str],
    base: CostTable, unidentified: Sequence[str],
) -> tuple[str, ...]:  # fmt: skip
    out: list[str] = []
    if unidentified:
        names = ", ".join(unidentified)
        out.append(f"the fitted rows never count {names}: not fitted, left at the base cost")
    fitted_events = {e for p in params for e in p.events}
    anchors = [e for e in events if e not in fitted_events and base[e] > 0]
    if not anchors:
        out.append("every counted cost is fitted: overheads are ratios, so the absolute "
                   "scale of the fitted costs is arbitrary (fix at least one cost)")  # fmt: skip
    if len(fitted) < len(params) - len(unidentified):
        n = len(params) - len(unidentified)
        out.append(f"{len(fitted)} fitted points for {n} parameters: underdetermined")
    return tuple(out)


def _mae(
    rows: Sequence[ReproRow], *, fitted: bool, significant: bool = False
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for mode in MODES:
        errs = [abs(r.error) for r in rows
                if r.mode == mode and r.fitted == fitted and r.error is not None
                and (r.mark != "" or not significant)]  # fmt: skip
        out[mode] = math.fsum(errs) / len(errs) if errs else None
    return out


def reproduce(
    counts_provider: CountsProvider,
    table: PublishedTable | str = "v5-corrected",
    fit_spec: FitSpec | str = DEFAULT_FIT_ROWS,
) -> FitResult:
    """Ask ``counts_provider`` for every row and mode, then :func:`fit`.

    ``counts_provider(row, mode)`` returns ``{"off": counts, "on": counts}`` for the
    benchmark behind ``row`` (``row.workload`` with ``row.params``) run in ``mode``
    ("batching"/"no_batching"), or ``None`` if the model cannot run that row. Counts
    are ``{event: number}`` per the same amount of work in both runs (e.g. per
    iteration). If the row's table has ``set_memory_pkey_noop`` (v5 as posted), the
    provider should run the ON case with ``set_memory_pkey()`` a no-op, as the mock
    did. ``table`` is a table or its name; ``fit_spec`` is a :class:`FitSpec` or just
    its row selection (``"fork,vmalloc"``).
    """
    tbl = load_table(table) if isinstance(table, str) else table
    spec = FitSpec(fit_rows=fit_spec) if isinstance(fit_spec, str) else fit_spec
    return fit(tbl, collect_counts(counts_provider, tbl), spec)


def evaluate(table: PublishedTable, counts: Mapping[str, RowCounts], costs: CostTable) -> FitResult:
    """Every row modelled with ``costs`` as they are (no fit): each row is a prediction
    of those costs, none was fitted here (``mae_predicted`` covers every modelled row)."""
    points, missing = _points(table, counts, frozenset(), ())
    rows = _rows(table, points, missing, costs)
    return FitResult(
        table=table.name,
        fit_rows=(),
        params={},
        initial={},
        costs=costs,
        rows=tuple(rows),
        mae_predicted=_mae(rows, fitted=False),
        mae_predicted_significant=_mae(rows, fitted=False, significant=True),
        mae_fitted=_mae(rows, fitted=True),
        iterations=0,
    )


def collect_counts(
    counts_provider: CountsProvider, table: PublishedTable
) -> dict[str, dict[str, Counts]]:
    """The provider's counts per row key, in the form :func:`fit` takes."""
    counts: dict[str, dict[str, Counts]] = {}
    for row in table.rows:
        for mode in MODES:
            got = counts_provider(row, mode)
            if got is None:
                continue
            if "on" not in got or "off" not in got:
                raise CountsError(f"counts provider, row {row.key} ({mode}): need 'on' and 'off'")
            rc = counts.setdefault(row.key, {})
            rc[f"on_{mode}"], rc[f"off_{mode}"] = got["on"], got["off"]
    return counts
