"""Sweep grids: which scenarios a ``kpsim sweep`` runs (issue 15, item 2).

Models nothing in Linux; this is kpsim's input format for design-space sweeps. A grid
is a TOML file::

    scenario = "base.toml"     # optional: the scenario every run starts from
    audit = "end"              # optional: end | full | none (kpsim run --audit)
    costs = "costs.toml"       # optional: kpsim run --costs

    [base]                     # optional, instead of scenario = ...: the scenario inline
    [base.machine]
    memory = "256M"

    [grid]                     # every combination of these values (a cartesian product)
    "machine.memory" = ["256M", "512M"]
    "kernel.linear_map" = ["pte", "block"]
    workload = ["micromm.fork:size=2M,h=0", ["kernbench:processes=2", "micromm.munmap"]]
    "workload.size" = ["2M", "8M"]
    seed = [0, 1]

    [[point]]                  # optional: an explicit list of runs; each is combined
    "kernel.allocator" = "pba" # with every combination of [grid]

A key names a scenario field: ``seed``, ``machine.FIELD``, ``kernel.FIELD``,
``attack.FIELD`` (the scenario format's own fields, so a kernel option added to the
scenario format is a grid parameter with no change here), ``workload`` (the run's
workloads: a ``kpsim run --workload`` string, an inline table ``{name = ...}``, or an
array of those) and ``workload.PARAM`` (the parameter set in each of the run's
workloads that has it).

Every run is checked before anything runs, as ``kpsim run`` checks a scenario; a
problem is one :class:`~kpsim.errors.InputError` naming the grid file, the line of the
value responsible and the problem. Each run's identity is a digest of what it runs
(the scenario's fields, the costs, the audit mode), so the same run in two grids, or a
grid edited between two sweeps, is recognised (:attr:`Run.run_id`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from kpsim.engine.job import AUDIT_MODES
from kpsim.errors import InputError, read_input_text
from kpsim.machine.scenario import (
    KERNEL_FIELDS,
    MACHINE_FIELDS,
    TomlDoc,
    machine_config,
    parse_scenario,
    parse_toml,
    scenario_from_doc,
)
from kpsim.machine.scenario_text import parse_workload_option, scenario_data

__all__ = ["Grid", "Run", "load_grid", "parse_grid"]

_TOP = ("scenario", "base", "grid", "point", "audit", "costs")
_SECTIONS = {"machine": MACHINE_FIELDS, "kernel": KERNEL_FIELDS}


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a sweep: the scenario text it runs and the grid values that made it."""

    run_id: str
    scenario: str  # TOML text, every grid value applied
    params: dict[str, Any]  # grid key -> value (as written in the grid)

    @property
    def name(self) -> str:
        """The scenario's name in the run's document (derived from its content only)."""
        return f"<sweep run {self.run_id}>"


@dataclass(frozen=True, slots=True)
class Grid:
    """A validated grid: its runs (unique, in grid order) and the sweep's options."""

    path: str
    keys: tuple[str, ...]  # every grid and point key, in order of appearance
    runs: tuple[Run, ...]
    audit: str
    costs: str | None


def load_grid(path: str | Path, arch: str | None = None) -> Grid:
    """Read and validate the grid file at ``path`` (``arch``: as :func:`parse_grid`)."""
    return parse_grid(read_input_text(path, "grid"), str(path), arch)


def parse_grid(text: str, path: str = "<grid>", arch: str | None = None) -> Grid:
    """Validate grid ``text`` and every run it describes; ``path`` names it in errors
    (and relative ``scenario``/``costs`` files are found beside it). ``arch``
    (``kpsim sweep --arch``) is every run's architecture, over the base scenario's; a
    grid whose runs choose ``machine.arch`` themselves is refused with it."""
    doc = parse_toml(text, path)
    for key in doc.data:
        if key not in _TOP:
            problem = f"unknown top-level key {key!r} (expected one of: {', '.join(_TOP)})"
            raise doc.error((key,), problem)
    base = _base(doc)
    audit = _option(doc, "audit", "end")
    if audit not in AUDIT_MODES:
        allowed = " | ".join(AUDIT_MODES)
        raise doc.error(("audit",), f"audit: must be one of {allowed}, got {audit!r}")
    costs = _costs(doc)
    axes = _axes(doc)
    points = _points(doc)
    keys = tuple(dict.fromkeys([*(k for k, _ in axes), *(k for p in points for k in p)]))
    if arch is not None:
        base = _with_arch(doc, base, keys, arch)
    given = "workload" in base or "workload" in (k for k, _ in axes)
    if not given and not all("workload" in p for p in points):
        problem = "no workloads: give [[base.workload]], or workload = [...] in [grid]"
        where = ("base",) if "base" in doc.data else ("grid",)
        raise InputError(problem, file=doc.file, line=doc.line(where) or doc.end_line)
    runs: dict[str, Run] = {}
    digest_costs = _costs_digest(costs)
    for point in points:
        for combo in itertools.product(*(values for _, values in axes)):
            chosen = {**point, **dict(zip([k for k, _ in axes], combo, strict=True))}
            run = _run(doc, base, chosen, audit, digest_costs)
            runs.setdefault(run.run_id, run)
    return Grid(path, keys, tuple(runs.values()), audit, costs)


# --------------------------------------------------------------------------- the file


def _option(doc: TomlDoc, key: str, default: str) -> str:
    value = doc.data.get(key, default)
    if not isinstance(value, str):
        raise doc.error((key,), f"{key}: must be a string, got {value!r}")
    return value


def _beside(doc: TomlDoc, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else Path(doc.file).parent / p


def _base(doc: TomlDoc) -> dict[str, Any]:
    """The base scenario's fields (``scenario = FILE`` or ``[base]``), validated."""
    if "scenario" in doc.data and "base" in doc.data:
        raise doc.error(("base",), "give either scenario = FILE or [base], not both")
    if "scenario" in doc.data:
        file = _beside(doc, _option(doc, "scenario", ""))
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            problem = f"scenario: cannot read {file}: {getattr(err, 'strerror', None) or err}"
            raise doc.error(("scenario",), problem) from None
        return scenario_data(parse_scenario(text, str(file)))
    base = doc.data.get("base", {})
    if not isinstance(base, dict):
        raise doc.error(("base",), "base: must be a table [base] (a scenario)")
    given = "workload" in base
    data = dict(base)
    lines = {p[1:]: line for p, line in doc.lines.items() if len(p) > 1 and p[0] == "base"}
    if not given:  # the grid gives every run's workloads; validate the rest with a stand-in
        data["workload"] = [{"name": "micromm.fork"}]
    try:
        s = scenario_from_doc(TomlDoc(data, lines, doc.file, doc.end_line))
    except InputError as err:
        raise InputError(f"[base]: {err.problem}", file=doc.file,
                         line=err.line or doc.line(("base",))) from None  # fmt: skip
    out = scenario_data(s)
    if not given:
        del out["workload"]
    return out


def _with_arch(
    doc: TomlDoc, base: dict[str, Any], keys: tuple[str, ...], arch: str
) -> dict[str, Any]:
    """``base`` on ``arch``. The base's own architecture (arm64 unless it names one) is
    left as written, so that ``--arch arm64`` keeps the run ids of a grid without it."""
    if "machine.arch" in keys:
        problem = (
            f"--arch {arch}: the grid chooses machine.arch for its runs; give one or the other"
        )
        line = doc.line(("grid", "machine.arch", 0)) or doc.line(("grid",))
        raise InputError(problem, file=doc.file, line=line)
    machine = base.get("machine", {})
    if machine.get("arch", "arm64") == arch:
        return base
    return {**base, "machine": {**machine, "arch": arch}}


def _costs(doc: TomlDoc) -> str | None:
    if "costs" not in doc.data:
        return None
    file = _beside(doc, _option(doc, "costs", ""))
    if not file.is_file():
        raise doc.error(("costs",), f"costs: no such file {file}")
    return str(file)


def _costs_digest(costs: str | None) -> str:
    return "" if costs is None else hashlib.sha256(Path(costs).read_bytes()).hexdigest()


def _axes(doc: TomlDoc) -> list[tuple[str, list[tuple[Any, int | None]]]]:
    """``[grid]``: (key, [(value, line)...]) per key, in order."""
    table = doc.data.get("grid", {})
    if not isinstance(table, dict):
        raise doc.error(("grid",), "grid: must be a table [grid]")
    out = []
    for key, values in table.items():
        _check_key(doc, ("grid", key), key)
        if not isinstance(values, list) or not values:
            problem = f"{key}: must be a non-empty array of values, got {values!r}"
            raise doc.error(("grid", key), problem)
        lines = [doc.line(("grid", key, i)) for i in range(len(values))]
        out.append((key, list(zip(values, lines, strict=True))))
    return out


def _points(doc: TomlDoc) -> list[dict[str, tuple[Any, int | None]]]:
    """``[[point]]`` tables as {key: (value, line)}; one empty point if there are none."""
    value = doc.data.get("point")
    if value is None:
        return [{}]
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise doc.error(("point",), "point: write [[point]] tables (one per run)")
    out = []
    for i, p in enumerate(value):
        for key in p:
            _check_key(doc, ("point", i, key), key)
        out.append({k: (v, doc.line(("point", i, k))) for k, v in p.items()})
    return out


def _check_key(doc: TomlDoc, where: tuple[str | int, ...], key: str) -> None:
    head, _, field = key.partition(".")
    ok = key in ("seed", "workload") or (
        head in _SECTIONS and field in _SECTIONS[head]
    )  # attack.* and workload.* are checked with the run they make
    ok = ok or (head in ("attack", "workload") and bool(field))
    if not ok:
        fields = [f"{s}.{f}" for s, fs in _SECTIONS.items() for f in fs]
        known = ", ".join(["seed", *fields, "attack.FIELD", "workload", "workload.PARAM"])
        raise doc.error(where, f"unknown parameter {key!r} (known: {known})")


# --------------------------------------------------------------------------- the runs


def _run(
    doc: TomlDoc,
    base: Mapping[str, Any],
    chosen: Mapping[str, tuple[Any, int | None]],
    audit: str,
    costs_digest: str,
) -> Run:
    """The run ``chosen`` makes of ``base``, validated (blamed on the culprit's line)."""
    data = _apply(doc, base, chosen)
    text = tomli_w.dumps(data)
    problem = _problem(text)
    if problem is not None:
        key = _culprit(doc, base, chosen)
        if key is None:
            raise InputError(problem, file=doc.file, line=doc.line(("grid",)))
        value, line = chosen[key]
        raise InputError(f"{key} = {_shown(value)}: {problem}", file=doc.file, line=line)
    identity = json.dumps({"scenario": data, "audit": audit, "costs": costs_digest},
                          sort_keys=True)  # fmt: skip
    run_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    params = {k: v for k, (v, _) in chosen.items()}
    return Run(run_id, text, params)


def _apply(
    doc: TomlDoc, base: Mapping[str, Any], chosen: Mapping[str, tuple[Any, int | None]]
) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain data
    if "workload" in chosen:
        value, line = chosen["workload"]
        data["workload"] = _workloads(doc, value, line)
    for key, (value, line) in chosen.items():
        head, _, field = key.partition(".")
        if key == "seed":
            data["seed"] = value
        elif head in ("machine", "kernel", "attack"):
            data.setdefault(head, {})[field] = value
        elif head == "workload" and field and "workload" in data:
            _set_param(doc, data["workload"], field, value, line)
    return data


def _workloads(doc: TomlDoc, value: Any, line: int | None) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            try:
                spec = parse_workload_option(item)
            except InputError as err:
                raise InputError(f"workload {item!r}: {err.problem}", file=doc.file,
                                 line=line) from None  # fmt: skip
            out.append({"name": spec.name, **spec.params})
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append(dict(item))
        else:
            problem = (
                'workload: expected a string such as "micromm.fork:size=2M" or a table '
                f"with a name, got {item!r}"
            )
            raise InputError(problem, file=doc.file, line=line)
    if not out:
        raise InputError("workload: an empty list runs nothing", file=doc.file, line=line)
    return out


def _set_param(
    doc: TomlDoc, workloads: Sequence[dict[str, Any]], param: str, value: Any, line: int | None
) -> None:
    from kpsim.workloads.registry import WORKLOADS

    hit = False
    for w in workloads:
        wd = WORKLOADS.get(w["name"])
        if wd is not None and any(p.name == param for p in wd.params):
            w[param] = value
            hit = True
    if not hit:
        names = ", ".join(w["name"] for w in workloads)
        problem = f"workload.{param}: no workload of this run has a parameter {param!r} ({names})"
        raise InputError(problem, file=doc.file, line=line)


def _problem(text: str) -> str | None:
    """What ``kpsim run`` would refuse in this scenario text (``None``: nothing)."""
    from kpsim.engine.job import validate_workloads

    try:
        s = parse_scenario(text, "<run>")
        validate_workloads(s)
        problem = machine_config(s).boot_problem()
        if problem is not None:
            return problem
        if s.attack is not None:
            from kpsim.attack import validate_attack

            validate_attack(s.attack)
    except InputError as err:
        return err.problem
    return None


def _culprit(
    doc: TomlDoc, base: Mapping[str, Any], chosen: Mapping[str, tuple[Any, int | None]]
) -> str | None:
    """The first grid key whose value, added to the base, makes the run invalid."""
    partial: dict[str, tuple[Any, int | None]] = {}
    if "workload" in chosen:  # the run's workloads first: the other keys may need them
        partial["workload"] = chosen["workload"]
        if _problem(tomli_w.dumps(_apply(doc, base, partial))) is not None:
            return "workload"
    for key, item in chosen.items():
        partial[key] = item
        data = _apply(doc, base, partial)
        if "workload" in data and _problem(tomli_w.dumps(data)) is not None:
            return key
    return None


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'
