"""The built-in workload registry: each benchmark the series measured, as a model run.

Models no kernel code itself; each workload module names the Linux paths it drives
(``micromm``, ``vmalloc_bench``, ``kernbench``). A workload is a :class:`WorkloadDef`:
a name, a doc line, typed parameters (:class:`ParamSpec`) and a ``run`` function that
drives a booted :class:`~kpsim.machine.boot.Machine`. :func:`validate_params` checks a
parameter mapping (scenario files and ``kpsim reproduce`` go through it) and
:func:`run_workload` runs one and returns the counter delta of the run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from kpsim.errors import InputError
from kpsim.events import Counters
from kpsim.machine.boot import KPKEYS_COUNTERS, Machine
from kpsim.machine.scenario import WorkloadSpec
from kpsim.units import format_size, parse_size
from kpsim.workloads import kernbench, micromm, vmalloc_bench
from kpsim.workloads.base import _USED, KINDS, ParamSpec, WorkloadDef, collecting

__all__ = [
    "KINDS",
    "WORKLOADS",
    "ParamSpec",
    "WorkloadDef",
    "run_workload",
    "validate_params",
]

WORKLOADS: dict[str, WorkloadDef] = {
    d.name: d for d in (*micromm.DEFS, *vmalloc_bench.DEFS, *kernbench.DEFS)
}


def _fail(spec: WorkloadSpec | None, name: str, param: str | None, problem: str) -> InputError:
    if spec is not None:
        return spec.error(param, problem)
    where = f"workload {name}" + (f" {param}" if param is not None else "")
    return InputError(f"{where}: {problem}")


def _check(p: ParamSpec, value: Any, fail: Any) -> Any:
    """``value`` converted to ``p``'s kind, or ``fail(problem)`` raised."""
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise fail(f"expected true or false, got {value!r}")
        return value
    if p.kind == "str":
        if not isinstance(value, str):
            raise fail(f"expected a string, got {value!r}")
        return value
    if p.kind == "choice":
        choices = p.choices or ()
        if isinstance(value, bool) or value not in choices:
            shown = ", ".join(str(c) for c in choices)
            raise fail(f"must be one of {shown}, got {value!r}")
        return value
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"expected an integer, got {value!r}")
        out = value
    else:  # size
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise fail(f"expected a size such as 64M or 4096, got {value!r}")
        try:
            out = parse_size(value, what=p.name)
        except InputError as err:
            raise fail(err.problem) from None
    bound = format_size if p.kind == "size" else str  # sizes in the units they are written in
    if p.min is not None and out < p.min:
        raise fail(f"must be at least {bound(p.min)}, got {value!r}")
    if p.max is not None and out > p.max:
        raise fail(f"must be at most {bound(p.max)}, got {value!r}")
    return out


def validate_params(
    name: str, params: Mapping[str, Any], *, spec: WorkloadSpec | None = None
) -> dict[str, Any]:
    """``params`` checked against workload ``name``'s specs, with defaults filled in.

    Errors (unknown workload, unknown parameter, bad value) are ``InputError``: built by
    ``spec.error(param, problem)`` when a scenario's :class:`WorkloadSpec` is given, so
    they name the file and line.
    """
    wd = WORKLOADS.get(name)
    if wd is None:
        known = ", ".join(sorted(WORKLOADS))
        raise _fail(spec, name, None, f"unknown workload {name!r} (known: {known})")
    specs = {p.name: p for p in wd.params}
    for key in params:
        if key not in specs:
            known = ", ".join(specs) or "none"
            raise _fail(spec, name, key, f"unknown parameter {key!r} (known: {known})")
    out: dict[str, Any] = {}
    for p in wd.params:

        def fail(problem: str, _p: ParamSpec = p) -> InputError:
            return _fail(spec, name, _p.name, problem)

        out[p.name] = _check(p, params.get(p.name, p.default), fail)
    return out


def run_workload(m: Machine, name: str, params: Mapping[str, Any], *, seed: int = 0) -> Counters:
    """Run workload ``name`` on ``m`` with ``params`` (validated); the counter delta.

    The delta covers what the benchmark times: the workload's measured windows
    (:func:`kpsim.workloads.base.measured`; e.g. only the ``fork()`` of micromm.fork,
    not the populate before it), or the whole run if it marks none.
    """
    values = validate_params(name, params)
    before = m.counters.snapshot()
    with collecting() as acc:
        WORKLOADS[name].run(m, values, random.Random(seed))
    if acc.pop(_USED, None) is None:
        delta = Counters(m.counters.since(before))
    else:
        delta = Counters({k: v for k, v in sorted(acc.items()) if v})
    for counter in KPKEYS_COUNTERS:  # issue 5's names are in every output, even at zero
        delta[counter] += 0
    return delta
