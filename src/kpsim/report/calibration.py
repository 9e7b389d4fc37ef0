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
its header (docs/workloads.md, "Which figure to quote"). Re-running that command takes
minutes, so staleness is detected through a cheap digest instead (:func:`inputs_digest`,
the file's ``inputs``): the priors, the published table, the fit's settings and the
counts of every row's runs at a small *probe* scale (``PROBE_SCALE``: the workloads'
counts per unit of work do not depend on the scale, so a count change in the model
changes the probe's counts too). A test recomputes it; a mismatch means the shipped
calibration no longer comes from the model as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Final

from kpsim.machine.scenario import parse_toml
from kpsim.report.cost import CostTable, default_costs
from kpsim.report.fit import NOISE_FLOOR_PP
from kpsim.report.published import MODES, Mode, PublishedTable
from kpsim.report.validate import FAMILIES, LEVEL, CVResult, Interval, interval

__all__ = [
    "PROBE_SCALE",
    "Calibration",
    "calibration",
    "calibration_toml",
    "costs_for",
    "inputs_digest",
    "mode_of",
    "overhead_interval",
    "parse_calibration",
]

_NAME: Final = "kpsim/report/data/calibration.toml"
_FIELDS: Final = frozenset(
    {"table", "params", "level", "spread", "cv_mae_significant", "command", "n_rows"}
)
#: optional fields (a file written before the digest existed has none)
_OPTIONAL: Final = frozenset({"inputs", "prior_decades"})
#: The scale of the probe runs behind :func:`inputs_digest` (``kpsim reproduce``'s
#: ``--size``, ``--loops``, ``--processes``): small enough for a test (about a second).
PROBE_SCALE: Final = {"size": 4 << 20, "loops": 20, "processes": 1}


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
    #: :func:`inputs_digest` of what the calibration was made from ("" if not recorded)
    inputs: str = ""
    prior_decades: float | None = None

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
        if key not in _FIELDS | _OPTIONAL:
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
        inputs=str(cal.get("inputs", "")),
        prior_decades=float(cal["prior_decades"]) if cal.get("prior_decades") else None,
    )


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    """The shipped calibration (``report/data/calibration.toml``)."""
    text = resources.files("kpsim.report").joinpath("data", "calibration.toml").read_text("utf-8")
    return parse_calibration(text, _NAME)


def costs_for(path: str | None, arch: str = "arm64") -> tuple[CostTable, str]:
    """The costs a verb prices with and the label it prints: the shipped calibration,
    ``path``'s overrides over it, or (``path`` = ``defaults``) the priors alone. The
    calibration is fitted to arm64 measurements only: another ``arch`` prices with its
    priors (``costs-x86.toml`` over ``costs.toml``), ``path``'s overrides over those."""
    from kpsim.report.cost import ARCH_COSTS, load_costs

    if arch != "arm64":
        priors = default_costs(arch)
        if path is None or path == "defaults":
            return priors, (
                f"defaults (the {arch} priors of report/data/{ARCH_COSTS[arch]} over "
                "costs.toml, not fitted: the calibration is arm64-only)"
            )
        return load_costs(path, priors), f"file {path} (over the {arch} priors)"
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


def inputs_digest(
    table: PublishedTable,
    probe_counts: Mapping[str, Mapping[str, Mapping[str, float]]],
    params: str,
    prior_decades: float | None,
    base: CostTable | None = None,
) -> str:
    """A digest of everything a calibration is computed from, but with the counts of
    the probe runs (``PROBE_SCALE``) standing for the full-scale counts: the priors
    (``costs.toml``), the published table's rows, the fitted parameters, the prior's
    width, the interval level and noise floor, the benchmark families, and every
    row's counts per configuration (as :func:`kpsim.report.fit.collect_counts` gives
    them); ``base`` is the start costs (the priors if None). Equal digests: re-running
    the calibration command would fit the same data."""
    start = default_costs() if base is None else base
    priors = {e.name: [e.cycles, e.status] for e in start.entries.values()}
    rows = [
        [r.key, r.workload, sorted((k, repr(v)) for k, v in r.params.items()),
         *([m, r.figure(m).percent, r.figure(m).mark] for m in MODES)]
        for r in table.rows
    ]  # fmt: skip
    counts = {
        key: {cfg: sorted((e, repr(float(n))) for e, n in c.items() if n)
              for cfg, c in sorted(rc.items())}
        for key, rc in sorted(probe_counts.items())
    }  # fmt: skip
    doc = {
        "priors": priors,
        "table": [table.name, table.series, table.set_memory_pkey_noop, rows],
        "params": params,
        "prior_decades": prior_decades,
        "level": LEVEL,
        "noise_floor": NOISE_FLOOR_PP,
        "families": list(FAMILIES),
        "probe": PROBE_SCALE,
        "counts": counts,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def calibration_toml(cv: CVResult, command: str, inputs: str = "",
                     prior_decades: float | None = None) -> str:  # fmt: skip
    """A calibration file from a cross-validation: its full-fit costs and spreads;
    ``inputs`` is the :func:`inputs_digest` of what it was made from."""
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
        *([f"prior_decades = {prior_decades:g}"] if prior_decades else []),
        *([f'inputs = "{inputs}"'] if inputs else []),
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
