"""The cost model: per-event cycle costs, estimates and overheads (issue 7, item 3).

Models no kernel code. The estimated time of a run is the sum of its counted events
times their costs, so every figure decomposes into events; the overhead of the
hardening is the estimate with the feature on against the same run with it off.
Defaults live in ``report/data/costs.toml`` (each with what it is and where the number
comes from; the series published none of them, spec §8 item 6); a user TOML overrides
them per run. A counter the table does not name costs 0 cycles.

Left out: anything not linear in the counts (contention, cache effects, overlap of
work between CPUs). Those show up as the model's error against the published tables.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from kpsim.errors import InputError, KpsimError, read_input_text
from kpsim.machine.scenario import TomlDoc, parse_toml

__all__ = [
    "ARCH_COSTS",
    "EVENTS",
    "SOURCES",
    "CostEntry",
    "CostTable",
    "Estimate",
    "Overhead",
    "ZeroBaselineError",
    "costs_toml",
    "default_costs",
    "estimate",
    "load_costs",
    "overhead",
    "overhead_breakdown",
    "parse_cost_overrides",
]

Counts = Mapping[str, float]

#: The counter names the cost model prices (the machine's, plus those the workloads add).
EVENTS: Final[tuple[str, ...]] = (
    "por_write", "isb", "dsb", "tlbi_sync", "tlbi_va", "tlbi_asid", "tlbi_all", "pte_write",
    "pgtable_alloc", "pgtable_free", "set_memory_pkey", "set_memory_pkey_page",
    "split_pud", "split_pmd", "split_cont", "pgfault", "fork_pte_copy", "fork_folio",
    "zap_pte", "zap_folio", "page_alloc.alloc", "page_alloc.free", "page_alloc.clear_page",
    "page_alloc.alloc_bulk_calls", "page_alloc.alloc_bulk", "page_alloc.alloc_order_4",
    "page_alloc.alloc_order_5", "page_alloc.alloc_order_6", "page_alloc.alloc_order_7",
    "page_alloc.alloc_order_8", "page_alloc.alloc_order_10",
    "page_alloc.buddy_alloc", "page_alloc.buddy_free", "page_alloc.pcp_refill",
    "page_alloc.pcp_drain", "page_alloc.free_tail",
    "pba.alloc", "pba.free", "pba.clear_page",
    "vmalloc", "vmalloc_page", "vfree", "vm_map_ram", "vm_unmap_ram", "vmap_lazy_purge",
    "syscall", "context_switches", "lazy_mmu_sections", "kpkeys_guard_entries", "other_cycles",
)  # fmt: skip
STATUSES: Final[tuple[str, ...]] = ("unknown", "definition", "override", "fitted")
#: Where a default's number comes from (costs.toml header): a published measurement, a
#: derivation from what the operation does, a measurement on the host, an assumption,
#: or the counter's definition.
SOURCES: Final[tuple[str, ...]] = ("cited", "derived", "host", "assumed", "definition")
_DEFAULTS_NAME: Final = "kpsim/report/data/costs.toml"
#: each non-arm64 architecture's prior file, laid over costs.toml (issue 18, item 5)
ARCH_COSTS: Final[dict[str, str]] = {"x86": "costs-x86.toml"}
_DEFAULT_FIELDS: Final = frozenset({"cycles", "status", "source", "ref", "history"})
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


class ZeroBaselineError(KpsimError, ZeroDivisionError):
    """The feature-off estimate is zero cycles, so no overhead percentage exists."""


@dataclass(frozen=True, slots=True)
class CostEntry:
    """The cost of one event in cycles; ``status`` says whether it was fitted or
    overridden, ``source`` where a default's number comes from (``SOURCES``), ``ref``
    the citation or derivation, ``history`` when it was set against the published tables.
    """

    name: str
    cycles: float
    status: str
    source: str = "definition"
    ref: str = ""
    history: str = ""


@dataclass(frozen=True, slots=True)
class CostTable:
    """An immutable table of event costs; names it lacks cost 0 cycles."""

    entries: Mapping[str, CostEntry]

    def __getitem__(self, name: str) -> float:
        entry = self.entries.get(name)
        return 0.0 if entry is None else entry.cycles

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def status(self, name: str) -> str:
        entry = self.entries.get(name)
        return "definition" if entry is None else entry.status

    def as_dict(self) -> dict[str, float]:
        return {name: e.cycles for name, e in self.entries.items()}

    def replace(self, updates: Mapping[str, float], status: str = "override") -> CostTable:
        """A copy with ``updates`` applied (each marked ``status``); names must exist."""
        unknown = sorted(set(updates) - set(self.entries))
        if unknown:
            raise InputError(f"unknown cost event(s): {', '.join(unknown)}")
        entries = dict(self.entries)
        for name, cycles in updates.items():
            old = entries[name]
            entries[name] = CostEntry(name, float(cycles), status, old.source, old.ref, old.history)
        return CostTable(MappingProxyType(entries))


@lru_cache(maxsize=4)
def default_costs(arch: str = "arm64") -> CostTable:
    """The shipped priors (``report/data/costs.toml``); for another architecture,
    those with its own file laid over them (``costs-x86.toml``: :data:`ARCH_COSTS`)."""
    text = resources.files("kpsim.report").joinpath("data", "costs.toml").read_text("utf-8")
    base = parse_defaults(text, _DEFAULTS_NAME)
    if arch == "arm64":
        return base
    if arch not in ARCH_COSTS:
        raise KpsimError(f"no cost priors for architecture {arch!r}")
    name = ARCH_COSTS[arch]
    text = resources.files("kpsim.report").joinpath("data", name).read_text("utf-8")
    over = parse_defaults(text, f"kpsim/report/data/{name}")
    return CostTable(MappingProxyType({**base.entries, **over.entries}))


def parse_defaults(text: str, file: str) -> CostTable:
    """A cost table in the defaults' form: ``name = { cycles, status, source[, ref,
    history] }`` per entry; a malformed entry is ``InputError`` with file and line."""
    doc = parse_toml(text, file)
    entries: dict[str, CostEntry] = {}
    for name, value in _costs_table(doc).items():
        if not isinstance(value, dict) or not (
            {"cycles", "status", "source"} <= set(value) <= _DEFAULT_FIELDS
        ):
            raise doc.error(
                ("costs", name), f"{name}: expected {{ cycles = N, status = S, source = P }}"
            )
        if value["status"] not in STATUSES[:2]:
            raise doc.error(("costs", name), f"{name}: bad status {value['status']!r}")
        if value["source"] not in SOURCES:
            raise doc.error(("costs", name), f"{name}: bad source {value['source']!r}")
        cycles = _cycles(doc, name, value["cycles"])
        entries[name] = CostEntry(
            name,
            cycles,
            str(value["status"]),
            str(value["source"]),
            str(value.get("ref", "")),
            str(value.get("history", "")),
        )
    return CostTable(MappingProxyType(entries))


def _costs_table(doc: TomlDoc) -> dict[str, Any]:
    for key, value in doc.data.items():
        if key != "costs":
            problem = f"unknown field {key!r}: costs go in a [costs] table as `name = cycles`"
            raise doc.error((key,), problem)
        if not isinstance(value, dict):
            raise doc.error((key,), "costs: must be a [costs] table of `name = cycles`")
    return dict(doc.data.get("costs", {}))


def _cycles(doc: TomlDoc, name: str, value: Any) -> float:
    path = ("costs", name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        got = f"string {value!r}" if isinstance(value, str) else type(value).__name__
        raise doc.error(path, f"costs.{name}: must be a number of cycles, got {got}")
    if not math.isfinite(value) or value < 0:
        raise doc.error(path, f"costs.{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_cost_overrides(
    text: str, file: str, known: Iterable[str] | None = None
) -> dict[str, float]:
    """Parse a user cost file: a ``[costs]`` table of ``name = cycles``.

    ``name = { cycles = N }`` (the defaults' form) is accepted too. Unknown event names
    and values that are not non-negative numbers are ``InputError`` with file and line.
    """
    names = set(default_costs().names if known is None else known)
    doc = parse_toml(text, file)
    out: dict[str, float] = {}
    for name, value in _costs_table(doc).items():
        if name not in names:
            near = ", ".join(sorted(n for n in names if n[:3] == name[:3])) or "see costs.toml"
            raise doc.error(("costs", name), f"costs.{name}: unknown event (known: {near})")
        if isinstance(value, dict):
            if "cycles" not in value or not set(value) <= _DEFAULT_FIELDS:
                raise doc.error(("costs", name), f"costs.{name}: expected {{ cycles = N }}")
            value = value["cycles"]
        out[name] = _cycles(doc, name, value)
    return out


def load_costs(path: str | Path | None = None, base: CostTable | None = None) -> CostTable:
    """``base`` (the defaults if ``None``) with the overrides in the file at ``path``."""
    table = default_costs() if base is None else base
    if path is None:
        return table
    text = read_input_text(path, "cost file")
    return table.replace(parse_cost_overrides(text, str(path), table.names), "override")


def costs_toml(costs: CostTable, header: Sequence[str] = ()) -> str:
    """``costs`` as a cost file that :func:`load_costs` reads back exactly."""
    lines = [f"# {h}".rstrip() for h in header]
    lines += ["", "[costs]"] if lines else ["[costs]"]
    for e in costs.entries.values():
        key = e.name if _BARE.match(e.name) else json.dumps(e.name)
        lines.append(f"{key} = {e.cycles!r}  # {e.status}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True, slots=True)
class Estimate:
    """Total estimated cycles and the cycles of each counted event (largest first)."""

    total: float
    breakdown: Mapping[str, float]

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        return list(self.breakdown.items())[:n]


def estimate(counts: Counts, costs: CostTable) -> Estimate:
    """The estimated cycles of a run that counted ``counts``, broken down by event."""
    parts = {name: n * costs[name] for name, n in counts.items() if n}
    ordered = sorted(parts.items(), key=lambda kv: (-kv[1], kv[0]))
    return Estimate(math.fsum(parts.values()), MappingProxyType(dict(ordered)))


@dataclass(frozen=True, slots=True)
class Overhead:
    """Feature on against off: percent, and each event's share in percentage points.

    ``contributions`` sum to ``percent``; ordered by size, largest first.
    """

    percent: float
    on: Estimate
    off: Estimate
    contributions: Mapping[str, float]

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        return list(self.contributions.items())[:n]


def overhead_breakdown(on_counts: Counts, off_counts: Counts, costs: CostTable) -> Overhead:
    """The overhead of ``on_counts`` over ``off_counts`` and the events behind it."""
    on, off = estimate(on_counts, costs), estimate(off_counts, costs)
    if off.total <= 0:
        raise ZeroBaselineError("the feature-off run costs 0 cycles: no overhead percentage")
    delta: dict[str, float] = {}
    for name in set(on.breakdown) | set(off.breakdown):
        d = on.breakdown.get(name, 0.0) - off.breakdown.get(name, 0.0)
        if d:
            delta[name] = 100.0 * d / off.total
    ordered = sorted(delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    percent = 100.0 * (on.total - off.total) / off.total
    return Overhead(percent, on, off, MappingProxyType(dict(ordered)))


def overhead(on_counts: Counts, off_counts: Counts, costs: CostTable) -> float:
    """The overhead in percent of the run with the feature on against it off."""
    return overhead_breakdown(on_counts, off_counts, costs).percent
