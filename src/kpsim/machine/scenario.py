"""Scenario files: what machine to build, which kernel options, which workloads to run.

Models nothing in Linux; this is kpsim's input format (issue 7, item 1). A scenario is
a TOML file::

    seed = 1
    [machine]          # arch ("arm64" | "x86"), memory (size), cpus (1..256), poe (bool)
    [kernel]           # linear_map, hardened_pgtables, allocator, batching, pt_reclaim,
                       # allow_unsafe_split, series (v4..v8, enter-leave)
    [[workload]]       # name = "...", then the workload's own parameters
    [attack]           # optional; validated by kpsim.attack

Every field is validated here, with a message naming the file, the line, the field
and the problem (:class:`~kpsim.errors.InputError`; impossible machine or kernel
values are :class:`~kpsim.errors.ConfigError`). Unknown fields are errors.
``Scenario.machine``/``.kernel`` hold only the fields the file sets, as plain values
(memory in bytes), so ``MachineConfig(**machine, **kernel)`` supplies the defaults.
Workload and attack parameters are kept as given, each with its line, for the
workload registry and the attack module to validate.

``tomllib`` reports no positions for values, so :class:`TomlDoc` pairs the parsed data
with a small scanner that records the line of every table header and ``key =``.
Left out: cross-field policy (which allocator suits which linear map) belongs to the
machine configuration that consumes these values.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpsim.errors import ConfigError, InputError, last_line, read_input_text
from kpsim.hw.arm64.system import MAX_CPUS
from kpsim.machine.config import (
    ALLOCATORS,
    ARCHES,
    LINEAR_MAP_POLICIES,
    MAX_MEMORY,
    MIN_MEMORY,
    MachineConfig,
)
from kpsim.mm.fault_inject import SITES as FAULT_SITES
from kpsim.mm.fault_inject import parse_fault_spec
from kpsim.mm.kpkeys_series import SERIES_NAMES
from kpsim.units import SZ_2M, format_size, parse_size

__all__ = [
    "KERNEL_FIELDS",
    "MACHINE_FIELDS",
    "AttackSpec",
    "Scenario",
    "TomlDoc",
    "WorkloadSpec",
    "load_scenario",
    "machine_config",
    "parse_scenario",
    "parse_toml",
    "scenario_from_doc",
    "toml_loads",
]

KeyPath = tuple[str | int, ...]

LINEAR_MAPS = LINEAR_MAP_POLICIES
MACHINE_FIELDS = ("arch", "memory", "cpus", "poe")
KERNEL_FIELDS = (
    "linear_map",
    "hardened_pgtables",
    "allocator",
    "batching",
    "pt_reclaim",
    "allow_unsafe_split",
    "series",
    *(f"fail_{site}" for site in FAULT_SITES),
)
_TOP_FIELDS = ("seed", "machine", "kernel", "workload", "attack")


# --------------------------------------------------------------------------- TOML + lines


@dataclass(frozen=True, slots=True)
class TomlDoc:
    """A parsed TOML document and the line of every header and key in it.

    Paths are tuples of keys, with an int index for array elements:
    ``("workload", 1, "pages")`` is ``pages`` in the second ``[[workload]]``.
    """

    data: dict[str, Any]
    lines: Mapping[KeyPath, int]
    file: str
    #: the last line (:func:`kpsim.errors.last_line`): where a missing table is reported
    end_line: int = 1

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its longest prefix that has one."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def error(self, path: KeyPath, problem: str, *, config: bool = False) -> InputError:
        """An error at ``path`` (a ``ConfigError`` if ``config``), naming file and line."""
        cls = ConfigError if config else InputError
        return cls(problem, file=self.file, line=self.line(path))


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def toml_loads(text: str, file: str | None, what: str = "TOML syntax") -> dict[str, Any]:
    """``tomllib.loads``; a syntax error becomes an ``InputError`` ``what: problem
    (column C)`` at tomllib's line; one tomllib found at the end of the document (an
    unterminated string, a missing ``]``) is at the last line, "(at end of file)"."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = _TOML_POS.search(msg)
        if m is None:
            end = _TOML_END.search(msg)
            problem = f"{what}: {msg[: end.start()]} (at end of file)" if end else f"{what}: {msg}"
            raise InputError(problem, file=file, line=last_line(text)) from None
        problem = f"{what}: {msg[: m.start()]} (column {m.group(2)})"
        raise InputError(problem, file=file, line=int(m.group(1))) from None


def parse_toml(text: str, file: str) -> TomlDoc:
    """Parse ``text``; a syntax error becomes an ``InputError`` with file and line."""
    return TomlDoc(toml_loads(text, file), _TomlLineScanner(text).scan(), file, last_line(text))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _TomlLineScanner:
    """Records the line of each header and key of a document ``tomllib`` accepted."""

    __slots__ = ("_arrays", "i", "line", "lines", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self._arrays: dict[KeyPath, int] = {}

    def scan(self) -> dict[KeyPath, int]:
        current: KeyPath = ()
        text = self.text
        while True:
            self._skip_blank(newlines=True)
            if self.i >= len(text):
                return self.lines
            if text.startswith("[[", self.i):
                self.i += 2
                current = self._array_header()
            elif text[self.i] == "[":
                self.i += 1
                current = self._resolve(self._key())
                self._expect("]")
                for end in range(1, len(current) + 1):  # [a.b] defines a, as a.b = 1 does
                    self.lines.setdefault(current[:end], self.line)
            else:
                self._key_value(current)

    def _array_header(self) -> KeyPath:
        keys = self._key()
        self._expect("]]")
        parent = (*self._resolve(keys[:-1]), keys[-1])
        for end in range(1, len(parent)):  # [[a.b]] defines a
            self.lines.setdefault(parent[:end], self.line)
        index = self._arrays.get(parent, 0)
        self._arrays[parent] = index + 1
        self.lines.setdefault(parent, self.line)
        path = (*parent, index)
        self.lines[path] = self.line
        return path

    def _resolve(self, keys: tuple[str, ...]) -> KeyPath:
        """Map header keys to a path, entering the latest element of each array."""
        out: list[str | int] = []
        for k in keys:
            out.append(k)
            count = self._arrays.get(tuple(out))
            if count:
                out.append(count - 1)
        return tuple(out)

    def _key_value(self, base: KeyPath) -> None:
        path = base + self._key()
        for end in range(len(base) + 1, len(path)):  # a dotted key defines its tables
            self.lines.setdefault(path[:end], self.line)
        self.lines[path] = self.line
        self._expect("=")
        self._skip_blank(newlines=False)
        self._value(path)

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            parts.append(self._simple_key())
            self._skip_blank(newlines=False)
            if self.text.startswith(".", self.i):
                self.i += 1
                continue
            return tuple(parts)

    def _simple_key(self) -> str:
        text, i = self.text, self.i
        if text[i] in "\"'":
            start = i
            self._string()
            raw = text[start : self.i]
            value = tomllib.loads(f"k = {raw}")["k"]
            return str(value)
        m = _BARE_KEY.match(text, i)
        if m is None:  # pragma: no cover - tomllib accepted the document
            raise InputError(f"TOML scanner: unexpected {text[i]!r}", line=self.line)
        self.i = m.end()
        return m.group(0)

    def _value(self, path: KeyPath) -> None:
        c = self.text[self.i]
        if c in "\"'":
            self._string()
        elif c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",]}\n#":
                self.i += 1

    def _array(self, path: KeyPath) -> None:
        self.i += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self.text[self.i] == "]":
                self.i += 1
                return
            if self.text[self.i] == ",":
                self.i += 1
                continue
            self.lines[(*path, index)] = self.line
            self._value((*path, index))
            index += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.i += 1
        while True:
            self._skip_blank(newlines=True)
            c = self.text[self.i]
            if c == "}":
                self.i += 1
                return
            if c == ",":
                self.i += 1
                continue
            self._key_value(path)

    def _string(self) -> None:
        text = self.text
        quote = text[self.i]
        if text.startswith(quote * 3, self.i):
            self.i += 3
            while not text.startswith(quote * 3, self.i):
                self._advance_in_string(quote)
            self.i += 3
            while self.i < len(text) and text[self.i] == quote:  # up to 2 quotes in content
                self.i += 1
            return
        self.i += 1
        while text[self.i] != quote:
            self._advance_in_string(quote)
        self.i += 1

    def _advance_in_string(self, quote: str) -> None:
        c = self.text[self.i]
        if c == "\\" and quote == '"':
            if self.text[self.i + 1] == "\n":
                self.line += 1
            self.i += 2
            return
        if c == "\n":
            self.line += 1
        self.i += 1

    def _skip_blank(self, *, newlines: bool) -> None:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n" and newlines:
                self.line += 1
                self.i += 1
            elif c == "#":
                while self.i < len(text) and text[self.i] != "\n":
                    self.i += 1
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip_blank(newlines=False)
        if not self.text.startswith(token, self.i):  # pragma: no cover - tomllib accepted it
            raise InputError(f"TOML scanner: expected {token!r}", line=self.line)
        self.i += len(token)


# --------------------------------------------------------------------------- scenario values


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One ``[[workload]]``: a workload name and its parameters, as written.

    The workload registry validates ``params``; :meth:`error` builds its messages.
    """

    name: str
    params: dict[str, Any]
    line: int | None
    param_lines: dict[str, int] = field(default_factory=dict)
    file: str = "<scenario>"
    name_line: int | None = None

    def error(self, param: str | None, problem: str) -> InputError:
        """An ``InputError`` at the line of ``param`` (or of the table if ``None``);
        ``param="name"`` points at the ``name =`` line."""
        if param == "name" and self.name_line is not None:
            line: int | None = self.name_line
        else:
            line = self.param_lines.get(param, self.line) if param is not None else self.line
        where = f"[[workload]] {self.name}" + (f" {param}" if param is not None else "")
        return InputError(f"{where}: {problem}", file=self.file, line=line)


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """The ``[attack]`` table, kept as given with each key's line (validated by kpsim.attack)."""

    params: dict[str, Any]
    line: int | None
    param_lines: dict[str, int] = field(default_factory=dict)
    file: str = "<scenario>"

    def error(self, param: str | None, problem: str) -> InputError:
        """An ``InputError`` at the line of ``param`` (or of the table if ``None``)."""
        line = self.param_lines.get(param, self.line) if param is not None else self.line
        where = "[attack]" + (f" {param}" if param is not None else "")
        return InputError(f"{where}: {problem}", file=self.file, line=line)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario; ``machine``/``kernel`` hold the fields the file sets.

    ``lines`` maps ``"machine.memory"``, ``"kernel.allocator"``, ``"seed"``... (and the
    table names ``"machine"``/``"kernel"``) to their lines, for errors found later.
    """

    machine: dict[str, Any]
    kernel: dict[str, Any]
    workloads: list[WorkloadSpec]
    attack: AttackSpec | None
    seed: int
    path: str
    lines: dict[str, int] = field(default_factory=dict)

    def section(self, key: str) -> str | None:
        """``"machine"`` or ``"kernel"`` if the file sets ``key`` there, else ``None``."""
        if key in self.machine:
            return "machine"
        if key in self.kernel:
            return "kernel"
        return None

    def error(self, key: str, problem: str, *, config: bool = False) -> InputError:
        """An error about the machine/kernel field ``key``, at its line in the file."""
        sec = self.section(key)
        name = f"[{sec}] {key}" if sec is not None else key
        line = self.lines.get(f"{sec}.{key}") if sec is not None else self.lines.get(key)
        cls = ConfigError if config else InputError
        return cls(f"{name}: {problem}", file=self.path, line=line)


def machine_config(s: Scenario, overrides: Mapping[str, Any] | None = None) -> MachineConfig:
    """The ``MachineConfig`` the scenario describes, with ``overrides`` (command-line
    options) taking precedence. A value ``MachineConfig`` rejects becomes a
    ``ConfigError`` at the line of the scenario field responsible; a rejected override
    keeps the configuration's own message (it came from the command line)."""
    over = dict(overrides or {})
    fields: dict[str, Any] = {**s.machine, **s.kernel, "seed": s.seed}
    fields.update(over)
    no_x86 = "arch" not in MachineConfig.__dataclass_fields__  # until the x86 machine exists
    if no_x86 and fields.pop("arch", "arm64") != "arm64":
        problem = "x86: the x86 machine (arch/x86 and the boot dispatch) is not built yet"
        if "arch" in over or s.section("arch") is None:
            raise ConfigError(problem)
        raise s.error("arch", problem, config=True)
    try:
        return MachineConfig(**fields)
    except ConfigError as err:
        culprit = _culprit(fields)
        if culprit is None or culprit in over or s.section(culprit) is None:
            raise
        raise s.error(culprit, err.problem, config=True) from None


def _culprit(fields: Mapping[str, Any]) -> str | None:
    """The first field (in order) whose addition makes ``MachineConfig`` reject them."""
    partial: dict[str, Any] = {}
    for key, value in fields.items():
        partial[key] = value
        try:
            MachineConfig(**partial)
        except ConfigError:
            return key
    return None  # pragma: no cover - the whole set was rejected, so some prefix is


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the scenario file at ``path``."""
    return parse_scenario(read_input_text(path, "scenario"), str(path))


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Validate scenario ``text``; ``path`` names it in error messages."""
    return scenario_from_doc(parse_toml(text, path))


def scenario_from_doc(doc: TomlDoc) -> Scenario:
    """Validate a parsed scenario (a table inside another file keeps that file's lines:
    a sweep grid's ``[base]``)."""
    data = doc.data
    path = doc.file
    _reject_unknown(doc, (), data, _TOP_FIELDS, "top level")
    return Scenario(
        machine=_machine(doc),
        kernel=_kernel(doc),
        workloads=_workloads(doc),
        attack=_attack(doc),
        seed=_seed(doc, data.get("seed", 0)),
        path=path,
        lines=_field_lines(doc),
    )


def _field_lines(doc: TomlDoc) -> dict[str, int]:
    out: dict[str, int] = {}
    for path, line in doc.lines.items():
        if path and path[0] in ("machine", "kernel", "seed") and len(path) <= 2:
            out[".".join(str(p) for p in path)] = line
    return out


def _reject_unknown(
    doc: TomlDoc, path: KeyPath, table: Mapping[str, Any], allowed: tuple[str, ...], where: str
) -> None:
    for key in table:
        if key not in allowed:
            expected = ", ".join(allowed)
            raise doc.error(
                (*path, key), f"{where}: unknown field {key!r} (expected one of: {expected})"
            )


def _table(doc: TomlDoc, name: str) -> Mapping[str, Any]:
    value = doc.data.get(name, {})
    if not isinstance(value, dict):
        raise doc.error((name,), f"{name}: must be a table [{name}], got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _machine(doc: TomlDoc) -> dict[str, Any]:
    table = _table(doc, "machine")
    _reject_unknown(doc, ("machine",), table, MACHINE_FIELDS, "[machine]")
    out: dict[str, Any] = {}
    if "arch" in table:
        out["arch"] = _choice(doc, ("machine", "arch"), "[machine] arch", table["arch"], ARCHES)
    if "memory" in table:
        out["memory"] = _memory(doc, table["memory"])
    if "cpus" in table:
        cpus = table["cpus"]
        if not isinstance(cpus, int) or isinstance(cpus, bool) or not 1 <= cpus <= MAX_CPUS:
            problem = f"[machine] cpus: must be an integer from 1 to {MAX_CPUS}, got {_kind(cpus)}"
            raise doc.error(("machine", "cpus"), problem, config=True)
        out["cpus"] = cpus
    if "poe" in table:
        out["poe"] = _bool(doc, ("machine", "poe"), "[machine] poe", table["poe"])
    return out


def _memory(doc: TomlDoc, value: Any) -> int:
    path: KeyPath = ("machine", "memory")
    if isinstance(value, bool) or not isinstance(value, int | str):
        problem = f'[machine] memory: must be a size such as "2G" or 4096, got {_kind(value)}'
        raise doc.error(path, problem)
    try:
        size = parse_size(value, what="[machine] memory")
    except InputError as err:
        raise doc.error(path, err.problem) from None
    if not MIN_MEMORY <= size <= MAX_MEMORY or size % SZ_2M:
        lo, hi = format_size(MIN_MEMORY), format_size(MAX_MEMORY)
        problem = f"[machine] memory: must be a multiple of 2M from {lo} to {hi}, got {value!r}"
        raise doc.error(path, problem, config=True)
    return size


def _bool(doc: TomlDoc, path: KeyPath, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(path, f"{name}: must be true or false, got {_kind(value)}")
    return value


def _choice(doc: TomlDoc, path: KeyPath, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = " | ".join(f'"{c}"' for c in choices)
        raise doc.error(path, f"{name}: must be one of {allowed}, got {_kind(value)}", config=True)
    return value


def _kernel(doc: TomlDoc) -> dict[str, Any]:
    table = _table(doc, "kernel")
    _reject_unknown(doc, ("kernel",), table, KERNEL_FIELDS, "[kernel]")
    out: dict[str, Any] = {}
    choices = {"linear_map": LINEAR_MAPS, "allocator": ALLOCATORS, "series": SERIES_NAMES}
    for key, value in table.items():
        path: KeyPath = ("kernel", key)
        if key in choices:
            out[key] = _choice(doc, path, f"[kernel] {key}", value, choices[key])
        elif key.startswith("fail_"):
            out[key] = _fault_spec(doc, path, key, value)
        else:
            out[key] = _bool(doc, path, f"[kernel] {key}", value)
    return out


def _fault_spec(doc: TomlDoc, path: KeyPath, key: str, value: Any) -> str:
    """A ``fail_<site>`` value: a spec string (:func:`kpsim.mm.fault_inject.parse_fault_spec`)."""
    try:
        parse_fault_spec(key[len("fail_") :], value)
    except ConfigError as err:
        raise doc.error(path, f"[kernel] {err.problem}", config=True) from None
    return str(value)


def _workloads(doc: TomlDoc) -> list[WorkloadSpec]:
    value = doc.data.get("workload")
    if value is None:
        problem = "no [[workload]]: a scenario runs at least one workload"
        raise InputError(problem, file=doc.file, line=doc.end_line)
    if isinstance(value, dict):
        raise doc.error(
            ("workload",), "workload: write [[workload]] (one per workload), not [workload]"
        )
    if not isinstance(value, list) or not value:
        problem = f"workload: must be one or more [[workload]] tables, got {_kind(value)}"
        raise doc.error(("workload",), problem)
    return [_workload(doc, i, item) for i, item in enumerate(value)]


def _workload(doc: TomlDoc, index: int, item: Any) -> WorkloadSpec:
    path: KeyPath = ("workload", index)
    where = f"[[workload]] #{index + 1}"
    if not isinstance(item, dict):
        raise doc.error(path, f"{where}: must be a table, got {_kind(item)}")
    name = item.get("name")
    if name is None:
        raise doc.error(path, f'{where} name: missing (the workload to run, e.g. "kernbench")')
    if not isinstance(name, str) or not name.strip():
        raise doc.error(
            (*path, "name"), f"{where} name: must be a non-empty string, got {_kind(name)}"
        )
    params = {k: v for k, v in item.items() if k != "name"}
    lines = _key_lines(doc, path, params)
    name_line = doc.lines.get((*path, "name"))
    return WorkloadSpec(name.strip(), params, doc.line(path), lines, doc.file, name_line)


def _key_lines(doc: TomlDoc, path: KeyPath, params: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in params:
        line = doc.line((*path, key))
        if line is not None:
            out[key] = line
    return out


def _attack(doc: TomlDoc) -> AttackSpec | None:
    if "attack" not in doc.data:
        return None
    table = _table(doc, "attack")
    params = dict(table)
    return AttackSpec(params, doc.line(("attack",)), _key_lines(doc, ("attack",), params), doc.file)


def _seed(doc: TomlDoc, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise doc.error(("seed",), f"seed: must be a non-negative integer, got {_kind(value)}")
    return value
