"""The series' published benchmark tables (kpkeys-spec.md §7.2-7.4), as typed rows.

Models nothing; this is reference data. Each table lives in ``report/data`` as TOML
holding the published figures as the exact published text (``"(R) 221.39%"``), its
source URLs, and kpsim's names for each row (``key``, ``group``, ``workload``,
``params``), which are not published. The loader parses the text into a value and a
significance mark. A published figure is only ever shown as "published": nothing in
kpsim computes with it except the calibration residual (``kpsim.report.fit``).

Row selection (``select_rows``): a comma-separated list of tokens, each a group
(``kernbench``, ``fork``, ``munmap``, ``vmalloc`` = the vmalloc()/vfree() tests
fix_size_alloc and random_size_alloc, ``vm_map_ram``), a test (``fix_size_alloc``), a
workload (``vmalloc.vm_map_ram``), an exact key (``fork/h:1``; a key's own commas, as in
``fix_size_alloc/p:1,h:0``, stay in the key) or ``all``; a leading ``-`` removes the
rows a token names.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Final, Literal

from kpsim.errors import InputError

__all__ = [
    "MODES",
    "TABLE_NAMES",
    "Figure",
    "Mode",
    "PublishedRow",
    "PublishedTable",
    "load_table",
    "select_rows",
]

Mode = Literal["batching", "no_batching"]
MODES: Final[tuple[Mode, ...]] = ("batching", "no_batching")
TABLE_NAMES: Final[tuple[str, ...]] = ("v4", "v5", "v5-corrected")
_FILES: Final[Mapping[str, str]] = {
    "v4": "published_v4.toml",
    "v5": "published_v5.toml",
    "v5-corrected": "published_v5_corrected.toml",
}
_FIGURE = re.compile(r"^(?:\((R|I)\) )?(-?\d+(?:\.\d+)?)%$")


@dataclass(frozen=True, slots=True)
class Figure:
    """One published cell: relative change in percent and its significance mark.

    ``mark`` is ``"R"`` (significant regression), ``"I"`` (significant improvement)
    or ``""`` (not statistically significant: within noise).
    """

    percent: float
    mark: str
    text: str

    @property
    def significant(self) -> bool:
        return self.mark != ""

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Figure:
        m = _FIGURE.match(text)
        if m is None:
            raise ValueError(f"not a published figure: {text!r}")
        return cls(float(m.group(2)), m.group(1) or "", text)


@dataclass(frozen=True, slots=True)
class PublishedRow:
    """One row of a published table, with kpsim's name for the workload behind it."""

    table: str
    key: str
    benchmark: str
    result_class: str
    group: str
    workload: str
    params: Mapping[str, Any]
    without_batching: Figure
    with_batching: Figure

    def figure(self, mode: Mode) -> Figure:
        """The published figure for ``mode`` ("batching" or "no_batching")."""
        return self.with_batching if mode == "batching" else self.without_batching

    @property
    def test(self) -> str:
        """The test part of the key: ``fix_size_alloc`` for ``fix_size_alloc/p:1,h:0``."""
        return self.key.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class PublishedTable:
    """A published table: its rows, provenance and the mock's known flaw, if any.

    ``series``: the posting of the series the table measured (the machine's ``series``
    option), so that its rows are run with that posting's kpkeys behaviour.
    ``set_memory_pkey_noop``: the mock skipped ``set_memory_pkey()`` entirely (v5 as
    posted), so a faithful counts provider runs the ON case with that call a no-op.
    """

    name: str
    title: str
    baseline: str
    machine: str
    sources: tuple[str, ...]
    notes: tuple[str, ...]
    set_memory_pkey_noop: bool
    rows: tuple[PublishedRow, ...]
    series: str = "v5"

    def row(self, key: str) -> PublishedRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise InputError(f"table {self.name}: no row {key!r}")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.rows)


def load_table(name: str = "v5-corrected") -> PublishedTable:
    """Load a published table by name: ``v4``, ``v5`` or ``v5-corrected``."""
    file = _FILES.get(name.lower().replace("_", "-"))
    if file is None:
        raise InputError(f"unknown table {name!r} (choose one of: {', '.join(TABLE_NAMES)})")
    text = resources.files("kpsim.report").joinpath("data", file).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    table = str(data["name"])
    rows = tuple(_row(table, r) for r in data["row"])
    return PublishedTable(
        name=table,
        title=str(data["title"]),
        baseline=str(data["baseline"]),
        machine=str(data["machine"]),
        sources=tuple(data["sources"]),
        notes=tuple(data.get("notes", ())),
        set_memory_pkey_noop=bool(data["set_memory_pkey_noop"]),
        rows=rows,
        series=str(data["series"]),
    )


def _row(table: str, r: Mapping[str, Any]) -> PublishedRow:
    return PublishedRow(
        table=table,
        key=str(r["key"]),
        benchmark=str(r["benchmark"]),
        result_class=str(r["result_class"]),
        group=str(r["group"]),
        workload=str(r["workload"]),
        params=MappingProxyType(dict(r["params"])),
        without_batching=Figure.parse(str(r["without_batching"])),
        with_batching=Figure.parse(str(r["with_batching"])),
    )


def _matches(row: PublishedRow, token: str) -> bool:
    return token in {"all", row.group, row.test, row.workload, row.key}


_PARAM = re.compile(r"[a-z_]+:[^,/\s]+")


def select_rows(table: PublishedTable, spec: str) -> frozenset[str]:
    """The keys of the rows that ``spec`` names (see the module docstring)."""
    chosen: set[str] = set()
    tokens: list[str] = []
    for t in (t.strip() for t in spec.split(",")):
        if tokens and "/" in tokens[-1] and _PARAM.fullmatch(t):
            tokens[-1] += "," + t  # a key's next parameter: fix_size_alloc/p:1,h:0
        elif t:
            tokens.append(t)
    if not tokens:
        raise InputError("row selection is empty (e.g. 'fork,vmalloc')")
    for token in tokens:
        exclude = token.startswith("-")
        name = token[1:].strip() if exclude else token
        hit = {r.key for r in table.rows if _matches(r, name)}
        if not hit:
            raise InputError(
                f"row selection: {name!r} names no row of table {table.name} "
                f"(groups: {', '.join(_groups(table))}; or a key such as "
                f"{table.rows[-1].key!r})"
            )
        chosen = chosen - hit if exclude else chosen | hit
    return frozenset(chosen)


def _groups(table: PublishedTable) -> list[str]:
    return sorted({r.group for r in table.rows})
