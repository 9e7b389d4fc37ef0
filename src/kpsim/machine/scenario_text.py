"""Scenarios written back as TOML, and workloads given on the command line.

Models nothing in Linux. :func:`scenario_toml` writes the scenario that actually runs:
a parsed :class:`~kpsim.machine.scenario.Scenario` with command-line overrides applied
(``--cpus 4``, ``--batching``, ``--seed``...), so that re-running the file reproduces
the run (issue 19, item 2). Fields go where a scenario file holds them: ``seed`` at the
top, ``MACHINE_FIELDS`` under ``[machine]``, ``KERNEL_FIELDS`` under ``[kernel]`` (a
kernel field added later is written like the others). Memory is written as a size
(``"1G"``). Workload and attack parameters are written as given.

:func:`parse_workload_option` reads ``kpsim run --workload NAME:KEY=VALUE,...``
(issue 19, item 6): a value that is a TOML integer, float or boolean (``0``, ``true``)
is one, anything else (``1G``) a string; the workload registry validates the result
like a ``[[workload]]`` table. Left out: parameters whose values contain commas.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

import tomli_w

from kpsim.errors import InputError
from kpsim.machine.scenario import KERNEL_FIELDS, MACHINE_FIELDS, Scenario, WorkloadSpec
from kpsim.units import format_size, parse_size

__all__ = ["WORKLOAD_OPTION", "parse_workload_option", "scenario_data", "scenario_toml"]

WORKLOAD_OPTION = "--workload"


def scenario_data(s: Scenario, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scenario's fields with ``overrides`` applied, as a scenario file holds them."""
    machine = dict(s.machine)
    kernel = dict(s.kernel)
    seed = s.seed
    for key, value in (overrides or {}).items():
        if key == "seed":
            seed = int(value)
        elif key in MACHINE_FIELDS:
            machine[key] = value
        elif key in KERNEL_FIELDS:
            kernel[key] = value
        else:
            raise InputError(f"{key}: not a scenario field")
    if "memory" in machine:
        machine["memory"] = format_size(parse_size(machine["memory"], what="memory"))
    doc: dict[str, Any] = {"seed": seed}
    if machine:
        doc["machine"] = machine
    if kernel:
        doc["kernel"] = kernel
    doc["workload"] = [{"name": w.name, **w.params} for w in s.workloads]
    if s.attack is not None:
        doc["attack"] = dict(s.attack.params)
    return doc


def scenario_toml(
    s: Scenario, overrides: Mapping[str, Any] | None = None, *, header: str = ""
) -> str:
    """The scenario as TOML text, ``overrides`` applied; ``header`` becomes comments."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + tomli_w.dumps(scenario_data(s, overrides))


def parse_workload_option(text: str) -> WorkloadSpec:
    """``micromm.fork:size=1G,h=0`` as a :class:`WorkloadSpec` (syntax checked here,
    parameters by the workload registry); bad syntax is an ``InputError``."""
    where = f"{WORKLOAD_OPTION} {text}"
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise InputError("missing the workload name (NAME or NAME:KEY=VALUE,...)", file=where)
    params: dict[str, Any] = {}
    for item in rest.split(",") if sep and rest.strip() else []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InputError(f"{item.strip()!r}: expected KEY=VALUE", file=where)
        if key in params:
            raise InputError(f"{key}: given twice", file=where)
        params[key] = _value(raw.strip())
    return WorkloadSpec(name, params, None, {}, where)


def _value(raw: str) -> Any:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return value if isinstance(value, bool | int | float) else raw
