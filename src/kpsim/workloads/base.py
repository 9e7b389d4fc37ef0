"""The types of the workload registry (:mod:`kpsim.workloads.registry` re-exports them)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from kpsim.machine.boot import Machine

__all__ = ["KINDS", "ParamSpec", "WorkloadDef", "collecting", "count", "measured"]

KINDS: Final[tuple[str, ...]] = ("int", "size", "bool", "str", "choice")


@dataclass(frozen=True)
class ParamSpec:
    """One workload parameter: its kind (see :data:`KINDS`), default and bounds.

    ``size`` values are byte counts written as ``64M`` or ``4096``; ``choice`` values
    must be one of ``choices``; ``min``/``max`` bound ``int`` and ``size`` values.
    """

    name: str
    kind: str
    default: Any
    choices: tuple[Any, ...] | None = None
    min: int | None = None
    max: int | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ParamSpec {self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"ParamSpec {self.name}: a choice needs choices")


@dataclass(frozen=True)
class WorkloadDef:
    """A built-in workload: ``run(machine, params, rng)`` drives the machine."""

    name: str
    doc: str
    params: tuple[ParamSpec, ...]
    run: Callable[[Machine, dict[str, Any], random.Random], None]


# --------------------------------------------------------------------------- measuring

_collectors: list[dict[str, int]] = []


@contextlib.contextmanager
def measured(m: Machine) -> Iterator[dict[str, int]]:
    """The part of a workload the benchmark times (setup and teardown stay outside).

    :func:`kpsim.workloads.registry.run_workload` returns the sum of every measured
    window of a run (or the whole run's delta if the workload measures no window).
    The yielded dict takes count corrections for the window, for a documented model
    departure only (e.g. micromm's THP frees); each is listed in docs/fidelity.md.
    """
    before = m.counters.snapshot()
    adjust: dict[str, int] = {}
    try:
        yield adjust
    finally:
        if _collectors:
            acc = _collectors[-1]
            for name, n in m.counters.since(before).items():
                acc[name] = acc.get(name, 0) + n
            for name, n in adjust.items():
                acc[name] = acc.get(name, 0) + n
            acc[_USED] = 1


def count(m: Machine, name: str, n: int = 1) -> None:
    """Count ``n`` ``name`` events the mm model does not count itself (see each caller)."""
    if n:
        m.k.counters[name] = m.k.counters.get(name, 0) + n


_USED: Final = "\0used"


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, int]]:
    """Collect the measured windows of a run (used by ``run_workload``)."""
    acc: dict[str, int] = {}
    _collectors.append(acc)
    try:
        yield acc
    finally:
        _collectors.pop()
