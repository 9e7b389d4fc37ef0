"""The shipped calibration: the costs every verb quotes by default, and their intervals.

Models no kernel code. ``report/data/calibration.toml`` is written by
``kpsim reproduce --cv --write-calibration FILE``: the cost parameters fitted on every
scored row of the v5-corrected table (the "full fit"), and per column (with and without
lazy-MMU batching) the relative spread of the leave-one-family-out held-out residuals
(:mod:`kpsim.report.validate`). ``kpsim run``, ``kpsim replay --cost`` and
``kpsim reproduce`` (without ``--fit``) price counts with these costs and print each
overhead with the interval :func:`overhead_interval` gives, so the three verbs give
one answer for one workload; ``--costs FILE`` overrides entries of it, ``--costs defaults``
prices with the priors alone (the interval then still comes from the calibration and
says so).

The file goes stale when the model's counts change: regenerate it with the command in
its header (docs/workloads.md, "Which figure to quote").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Final

from kpsim.machine.scenario import parse_toml
from kpsim.report.cost import CostTable, default_costs
from kpsim.report.published import MODES, Mode
from kpsim.report.validate import LEVEL, CVResult, Interval, interval

__all__ = [
    "Calibration",
    "calibration",
    "calibration_toml",
    "costs_for",
    "mode_of",
    "overhead_interval",
    "parse_calibration",
]

_NAME: Final = "kpsim/report/data/calibration.toml"
_FIELDS: Final = frozenset(
    {"table", "params", "level", "spread", "cv_mae_significant", "command", "n_rows"}
)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Fitted costs and the per-column interval spread of the shipped calibration."""

    table: str
    params: str
    level: float
    spread: dict[str, float]
    cv_mae_significant: dict[str, float]
    n_rows: int
    command: str
    costs: CostTable

    @property
    def label(self) -> str:
        return (
            f"fitted (all rows of table {self.table}, {len(self.params.split(','))} "
            f"parameters on {self.n_rows} points; report/data/calibration.toml)"
        )

    def interval(self, percent: float, mode: Mode, basis: str = "") -> Interval:
        why = basis or f"{int(self.level * 100)} % of held-out residuals, {self.table}"
        return interval(percent, self.spread[mode], self.level, why)


def mode_of(batching: bool) -> Mode:
    return "batching" if batching else "no_batching"


def parse_calibration(text: str, file: str) -> Calibration:
    """Read a calibration file; malformed content is ``InputError`` with file and line."""
    doc = parse_toml(text, file)
    for key in doc.data:
        if key not in ("calibration", "costs"):
            raise doc.error((key,), f"unknown table {key!r} (expected [calibration], [costs])")
    cal = doc.data.get("calibration")
    if not isinstance(cal, dict) or not set(cal) >= _FIELDS:
        raise doc.error(("calibration",), f"[calibration] needs {', '.join(sorted(_FIELDS))}")
    for key in cal:
        if key not in _FIELDS:
            raise doc.error(("calibration", key), f"calibration.{key}: unknown field")
    spread: dict[str, float] = {}
    for mode in MODES:
        v = cal["spread"].get(mode) if isinstance(cal["spread"], dict) else None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise doc.error(("calibration", "spread"), f"calibration.spread.{mode}: not >= 0")
        spread[mode] = float(v)
    base = default_costs()
    raw = doc.data.get("costs", {})
    updates: dict[str, float] = {}
    for name, v in raw.items():
        if name not in base:
            raise doc.error(("costs", name), f"costs.{name}: unknown event")
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise doc.error(("costs", name), f"costs.{name}: must be a number of cycles >= 0")
        updates[name] = float(v)
    return Calibration(
        table=str(cal["table"]),
        params=str(cal["params"]),
        level=float(cal["level"]),
        spread=spread,
        cv_mae_significant={k: float(v) for k, v in dict(cal["cv_mae_significant"]).items()},
        n_rows=int(cal["n_rows"]),
        command=str(cal["command"]),
        costs=base.replace(updates, status="fitted"),
    )


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    """The shipped calibration (``report/data/calibration.toml``)."""
    text = resources.files("kpsim.report").joinpath("data", "calibration.toml").read_text("utf-8")
    return parse_calibration(text, _NAME)


def costs_for(path: str | None) -> tuple[CostTable, str]:
    """The costs a verb prices with and the label it prints: the shipped calibration,
    ``path``'s overrides over it, or (``path`` = ``defaults``) the priors alone."""
    from kpsim.report.cost import load_costs

    if path is None:
        cal = calibration()
        return cal.costs, cal.label
    if path == "defaults":
        return default_costs(), "defaults (the priors of report/data/costs.toml, not fitted)"
    return load_costs(path, calibration().costs), f"file {path} (over the calibration)"


def overhead_interval(percent: float, batching: bool, costs_label: str = "") -> Interval:
    """The interval of an estimated overhead of a run with or without lazy-MMU batching
    (the function ``run``, ``replay --cost`` and the sweep call). With costs other than
    the calibration's the interval is the calibration's all the same, and says so."""
    cal = calibration()
    basis = ""
    if costs_label and not costs_label.startswith("fitted"):
        basis = "calibration's held-out spread; these costs were not cross-validated"
    return cal.interval(percent, mode_of(batching), basis)


def calibration_toml(cv: CVResult, command: str) -> str:
    """A calibration file from a cross-validation: its full-fit costs and spreads."""
    costs = cv.full.costs
    fitted = [e for e in costs.entries.values() if e.status == "fitted"]
    mae = {m: cv.mae[m]["significant"]["model"] for m in MODES}
    lines = [
        "# The shipped calibration (kpsim.report.calibration): the costs every verb quotes",
        "# by default and the spread of their intervals. Written by:",
        f"#   {command}",
        "# Regenerate it after any change to the model's counts. Costs: the parameters",
        f"# fitted on every scored row of table {cv.table}; spread: the {LEVEL} quantile of",
        "# |published - predicted| / (|predicted| + 5 pp) over the leave-one-family-out",
        "# held-out rows, per column.",
        "",
        "[calibration]",
        f'table = "{cv.table}"',
        f'params = "{",".join(cv.params)}"',
        f"level = {LEVEL}",
        "spread = { " + ", ".join(f"{m} = {cv.spread[m]:.6g}" for m in MODES) + " }",
        "cv_mae_significant = { "
        + ", ".join(f"{m} = {(mae[m] if mae[m] is not None else math.nan):.6g}" for m in MODES)
        + " }",
        f"n_rows = {sum(cv.n_rows.values())}",
        f'command = "{command}"',
        "",
        "[costs]",
    ]
    for e in fitted:
        key = e.name if e.name.replace("_", "").isalnum() else f'"{e.name}"'
        lines.append(f"{key} = {e.cycles:.6g}")
    return "\n".join(lines) + "\n"


def describe(cal: Calibration) -> dict[str, Any]:
    return {
        "table": cal.table,
        "params": cal.params,
        "level": cal.level,
        "spread": cal.spread,
        "cv_mae_significant": cal.cv_mae_significant,
        "n_rows": cal.n_rows,
    }
