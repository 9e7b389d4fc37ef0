"""Step files for ``kpsim conform``: parse, validate and apply (issue 4, item 5).

A steps file is TOML with one ``[[step]]`` table per step. Each step names an
``op`` (``mmap``, ``touch``, ``munmap``, ``mprotect``, ``madvise``, ``mremap``,
``fork``) and the fields of that op; sizes and addresses take suffixes (``2M``,
``16T``) or hex (``0x1000``) through :func:`kpsim.units.parse_size`. Region names
given by ``mmap`` resolve to the address that ``mmap`` returned.

The same steps run against any :class:`StepTarget`: the host kernel
(``kpsim.workloads.host``) or the simulated kernel (``kpsim.workloads.simtarget``,
built elsewhere). :func:`run_steps` records the target's page-table page count
(``VmPTE/4``) after every step; :func:`compare_results` lines two runs up.

File-backed mappings are memfds (shmem: the host's page cache plays no part).
Left out: ``brk``, ``exec`` and threads (no step op names them). ``tomllib``
reports no positions, so the lines of steps and fields come from a small scanner of
the file text (:func:`_scan_positions`).
"""

from __future__ import annotations

import bisect
import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, TypeAlias

from kpsim.errors import InputError, OutOfMemory, last_line, read_input_text
from kpsim.machine.scenario import toml_loads
from kpsim.units import PAGE_SIZE, parse_size

OPS = ("mmap", "touch", "munmap", "mprotect", "madvise", "mremap", "fork", "brk")
#: ``mmap`` flags a step may ask for (``shared`` selects MAP_SHARED over MAP_PRIVATE;
#: ``file`` maps a fresh memfd of the mapping's length instead of anonymous memory).
MMAP_FLAGS = frozenset({"fixed", "fixed_noreplace", "noreserve", "populate", "shared", "file"})
ADVICE = (
    "dontneed",
    "hugepage",
    "nohugepage",
    "dontfork",
    "dofork",
    "wipeonfork",
    "keeponfork",
)
ACCESS = ("write", "read")

_SPAN = ("region", "addr", "offset", "length")
_FIELDS: dict[str, tuple[str, ...]] = {
    "mmap": ("name", "addr", "length", "prot", "flags"),
    "touch": (*_SPAN, "stride", "access"),
    "munmap": _SPAN,
    "mprotect": (*_SPAN, "prot"),
    "madvise": (*_SPAN, "advice"),
    "mremap": (*_SPAN, "new_length", "new_addr"),
    "fork": (),
    "brk": ("name", "grow", "shrink"),
}


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Span:
    """Where a step acts: a named region (plus ``offset``) or an absolute ``addr``.

    ``length`` None means "to the end of the region".
    """

    region: str | None
    addr: int | None
    offset: int
    length: int | None


@dataclass(frozen=True, slots=True)
class _Step:
    """What every step has: its 1-based number and the line of its ``[[step]]``."""

    op: ClassVar[str]
    index: int
    line: int | None


@dataclass(frozen=True, slots=True)
class _SpanStep(_Step):
    """A step that acts on a :class:`Span`."""

    span: Span


@dataclass(frozen=True, slots=True)
class Mmap(_Step):
    """``mmap(addr, length, prot, MAP_PRIVATE|MAP_ANONYMOUS|flags)``, named ``name``
    (with ``file``: a new memfd of ``length`` bytes instead of ``MAP_ANONYMOUS``)."""

    op: ClassVar[str] = "mmap"
    name: str
    addr: int | None
    length: int
    prot: str
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Touch(_SpanStep):
    """Access one byte at ``start + k*stride`` for every ``k*stride < length``."""

    op: ClassVar[str] = "touch"
    stride: int
    write: bool


@dataclass(frozen=True, slots=True)
class Munmap(_SpanStep):
    """``munmap`` of the span."""

    op: ClassVar[str] = "munmap"


@dataclass(frozen=True, slots=True)
class Mprotect(_SpanStep):
    """``mprotect`` of the span to ``prot`` (``r``/``w``/``x`` letters or ``none``)."""

    op: ClassVar[str] = "mprotect"
    prot: str


@dataclass(frozen=True, slots=True)
class Madvise(_SpanStep):
    """``madvise`` of the span with ``advice`` (one of :data:`ADVICE`)."""

    op: ClassVar[str] = "madvise"
    advice: str


@dataclass(frozen=True, slots=True)
class Mremap(_SpanStep):
    """``mremap(MREMAP_MAYMOVE[|MREMAP_FIXED])`` of the span to ``new_length``."""

    op: ClassVar[str] = "mremap"
    new_length: int
    new_addr: int | None


@dataclass(frozen=True, slots=True)
class Fork(_Step):
    """``fork()``; the child stays alive, blocked; later steps act on the parent."""

    op: ClassVar[str] = "fork"


@dataclass(frozen=True, slots=True)
class Brk(_Step):
    """``brk(current + grow)`` or ``brk(current - shrink)``; a grown part may be named
    ``name`` (a region from the old break). Shrinking never goes below the break the
    first ``brk`` step found."""

    op: ClassVar[str] = "brk"
    name: str | None
    delta: int


Step: TypeAlias = Mmap | Touch | Munmap | Mprotect | Madvise | Mremap | Fork | Brk


@dataclass(frozen=True, slots=True)
class StepsFile:
    """A parsed steps file: where it came from and its steps, in order."""

    path: str | None
    steps: tuple[Step, ...]


# -------------------------------------------------------------------- positions


@dataclass(slots=True)
class _Positions:
    """Lines (1-based) of ``[[step]]`` headers, of each step's keys, of top-level keys."""

    steps: list[int] = field(default_factory=list)
    keys: list[dict[str, int]] = field(default_factory=list)
    top: dict[str, int] = field(default_factory=dict)


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#.*$')
_STEP_HEADER = re.compile(r"^\s*\[\[\s*step\s*\]\]\s*(?:#.*)?$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]")
_KEY = re.compile(r'^\s*(?:"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*[.=]')


def _scan_positions(text: str) -> _Positions:
    """Find step headers and ``key =`` lines, skipping multi-line strings and arrays."""
    pos = _Positions()
    depth = 0
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if raw.count(in_string) % 2 == 1:
                in_string = None
            continue
        for quote in ('"""', "'''"):
            if raw.count(quote) % 2 == 1:
                in_string = quote
        if depth == 0:
            _scan_line(raw, number, pos)
        bare = _STRING_OR_COMMENT.sub("", raw)
        depth = max(
            0, depth + bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")
        )
    return pos


def _scan_line(raw: str, number: int, pos: _Positions) -> None:
    if _STEP_HEADER.match(raw):
        pos.steps.append(number)
        pos.keys.append({})
        return
    header = _HEADER.match(raw)
    if header is not None:
        parts = [p.strip().strip("\"'") for p in header.group(1).split(".")]
        if parts[0] == "step" and len(parts) > 1 and pos.keys:
            pos.keys[-1].setdefault(parts[1], number)  # [step.x]: a field of the last step
        else:
            pos.top.setdefault(parts[0], number)
        return
    key = _KEY.match(raw)
    if key is not None:
        name = next(g for g in key.groups() if g is not None)
        target = pos.keys[-1] if pos.keys else pos.top
        target.setdefault(name, number)


# ---------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Ctx:
    """The step being parsed, for error messages that name file, line, step and field."""

    file: str | None
    index: int
    op: str
    line: int | None
    keys: dict[str, int]

    def error(self, problem: str, key: str | None = None) -> InputError:
        line = self.keys.get(key, self.line) if key is not None else self.line
        return InputError(f"step {self.index} ({self.op}): {problem}", file=self.file, line=line)


def load_steps(path: str | Path) -> StepsFile:
    """Read and parse a steps file; every problem is an :class:`InputError`."""
    return parse_steps(read_input_text(path, "steps file"), file=str(path))


def parse_steps(text: str, *, file: str | None = None) -> StepsFile:
    """Parse steps-file text (see the module docstring for the format)."""
    doc = toml_loads(text, file, "TOML syntax error")
    pos = _scan_positions(text)
    for key in doc:
        if key != "step":
            problem = f"unknown top-level key {key!r}: a steps file holds only [[step]] tables"
            raise InputError(problem, file=file, line=pos.top.get(key))
    tables = doc.get("step")
    if not isinstance(tables, list) or not tables:
        problem = "no steps: write one [[step]] table per step"
        raise InputError(problem, file=file, line=last_line(text))
    steps = tuple(_parse_step(table, i, pos, file) for i, table in enumerate(tables, start=1))
    _check_names(steps, pos, file)
    return StepsFile(path=file, steps=steps)


def _parse_step(table: Any, index: int, pos: _Positions, file: str | None) -> Step:
    line = pos.steps[index - 1] if index <= len(pos.steps) else None
    keys = pos.keys[index - 1] if index <= len(pos.keys) else {}
    if not isinstance(table, dict):
        raise InputError(f"step {index}: not a table", file=file, line=line)
    op = table.get("op")
    ctx = _Ctx(file, index, str(op), line, keys)
    if op is None:
        raise InputError(f"step {index}: missing field 'op'", file=file, line=line)
    if not isinstance(op, str) or op not in _FIELDS:
        problem = f"step {index}: op: unknown op {op!r} (expected one of {', '.join(OPS)})"
        raise InputError(problem, file=file, line=keys.get("op", line))
    for key in table:
        if key != "op" and key not in _FIELDS[op]:
            allowed = ", ".join(_FIELDS[op]) or "none"
            raise ctx.error(f"{key}: unknown field for {op} (fields: {allowed})", key)
    return _PARSERS[op](table, ctx)


def _parse_mmap(t: dict[str, Any], ctx: _Ctx) -> Mmap:
    name = t.get("name")
    if name is None:
        raise ctx.error("missing field 'name'")
    if not isinstance(name, str) or not name:
        raise ctx.error("name: expected a non-empty string", "name")
    addr = _size(t, ctx, "addr", aligned=True)
    length = _size(t, ctx, "length", aligned=True, positive=True, required=True)
    flags = _flags(t, ctx)
    if addr is None and flags & {"fixed", "fixed_noreplace"}:
        raise ctx.error("flags: fixed and fixed_noreplace need an 'addr'", "flags")
    assert length is not None
    return Mmap(ctx.index, ctx.line, name, addr, length, _prot(t, ctx, default="rw"), flags)


def _parse_touch(t: dict[str, Any], ctx: _Ctx) -> Touch:
    stride = _size(t, ctx, "stride", positive=True)
    access = t.get("access", "write")
    if access not in ACCESS:
        raise ctx.error(f"access: expected 'write' or 'read', got {access!r}", "access")
    span = _span(t, ctx, aligned=False)
    return Touch(
        ctx.index, ctx.line, span, PAGE_SIZE if stride is None else stride, access == "write"
    )


def _parse_munmap(t: dict[str, Any], ctx: _Ctx) -> Munmap:
    return Munmap(ctx.index, ctx.line, _span(t, ctx))


def _parse_mprotect(t: dict[str, Any], ctx: _Ctx) -> Mprotect:
    if "prot" not in t:
        raise ctx.error("missing field 'prot'")
    return Mprotect(ctx.index, ctx.line, _span(t, ctx), _prot(t, ctx, default="none"))


def _parse_madvise(t: dict[str, Any], ctx: _Ctx) -> Madvise:
    advice = t.get("advice")
    if advice is None:
        raise ctx.error("missing field 'advice'")
    if advice not in ADVICE:
        raise ctx.error(f"advice: expected one of {', '.join(ADVICE)}, got {advice!r}", "advice")
    return Madvise(ctx.index, ctx.line, _span(t, ctx), str(advice))


def _parse_mremap(t: dict[str, Any], ctx: _Ctx) -> Mremap:
    new_length = _size(t, ctx, "new_length", aligned=True, positive=True, required=True)
    new_addr = _size(t, ctx, "new_addr", aligned=True)
    assert new_length is not None
    return Mremap(ctx.index, ctx.line, _span(t, ctx), new_length, new_addr)


def _parse_fork(t: dict[str, Any], ctx: _Ctx) -> Fork:
    return Fork(ctx.index, ctx.line)


def _parse_brk(t: dict[str, Any], ctx: _Ctx) -> Brk:
    grow = _size(t, ctx, "grow", aligned=True, positive=True)
    shrink = _size(t, ctx, "shrink", aligned=True, positive=True)
    if (grow is None) == (shrink is None):
        raise ctx.error("give exactly one of 'grow' and 'shrink'")
    name = t.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ctx.error("name: expected a non-empty string", "name")
    if name is not None and grow is None:
        raise ctx.error("name: only a growing brk names a region", "name")
    return Brk(ctx.index, ctx.line, name, grow if grow is not None else -(shrink or 0))


_PARSERS: dict[str, Callable[[dict[str, Any], _Ctx], Step]] = {
    "mmap": _parse_mmap,
    "touch": _parse_touch,
    "munmap": _parse_munmap,
    "mprotect": _parse_mprotect,
    "madvise": _parse_madvise,
    "mremap": _parse_mremap,
    "fork": _parse_fork,
    "brk": _parse_brk,
}


def _size(
    t: dict[str, Any],
    ctx: _Ctx,
    key: str,
    *,
    aligned: bool = False,
    positive: bool = False,
    required: bool = False,
) -> int | None:
    """A size or address field: integer, hex or suffixed string; None when absent."""
    raw = t.get(key)
    if raw is None:
        if required:
            raise ctx.error(f"missing field {key!r}")
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        got = type(raw).__name__
        raise ctx.error(f"{key}: expected a size such as 2M, 16T, 0x1000 or 4096, got a {got}", key)
    try:
        value = parse_size(raw, what=key)
    except InputError as err:
        raise ctx.error(err.problem, key) from None
    if positive and value == 0:
        raise ctx.error(f"{key}: must be greater than zero", key)
    if aligned and value % PAGE_SIZE:
        raise ctx.error(f"{key}: {value:#x} is not a multiple of the 4 KiB page size", key)
    return value


def _prot(t: dict[str, Any], ctx: _Ctx, *, default: str) -> str:
    """``r``/``w``/``x`` letters in any order, or ``none``; returned in ``rwx`` order."""
    raw = t.get("prot", default)
    if raw == "none":
        return "none"
    if not isinstance(raw, str) or not raw or set(raw) - set("rwx") or len(set(raw)) != len(raw):
        raise ctx.error(f"prot: expected letters from 'rwx' or 'none', got {raw!r}", "prot")
    return "".join(c for c in "rwx" if c in raw)


def _flags(t: dict[str, Any], ctx: _Ctx) -> frozenset[str]:
    raw = t.get("flags", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise ctx.error("flags: expected a list of strings", "flags")
    for flag in raw:
        if flag not in MMAP_FLAGS:
            known = ", ".join(sorted(MMAP_FLAGS))
            raise ctx.error(f"flags: unknown flag {flag!r} (known: {known})", "flags")
    flags = frozenset(raw)
    if {"fixed", "fixed_noreplace"} <= flags:
        raise ctx.error("flags: fixed and fixed_noreplace exclude each other", "flags")
    return flags


def _span(t: dict[str, Any], ctx: _Ctx, *, aligned: bool = True) -> Span:
    region = t.get("region")
    addr = _size(t, ctx, "addr", aligned=aligned)
    offset = _size(t, ctx, "offset", aligned=aligned) or 0
    length = _size(t, ctx, "length", aligned=aligned, positive=True)
    if region is not None and not isinstance(region, str):
        raise ctx.error("region: expected the name of an mmap step", "region")
    if (region is None) == (addr is None):
        where = "addr" if addr is not None else None
        raise ctx.error("give exactly one of 'region' and 'addr'", where)
    if addr is not None and length is None:
        raise ctx.error("missing field 'length' (required with 'addr')")
    return Span(region, addr, offset, length)


def _check_names(steps: Sequence[Step], pos: _Positions, file: str | None) -> None:
    """Every mmap (or brk) name is new; every region names an earlier one."""
    defined: dict[str, int] = {}
    for step in steps:
        keys = pos.keys[step.index - 1] if step.index <= len(pos.keys) else {}
        ctx = _Ctx(file, step.index, step.op, step.line, keys)
        if isinstance(step, Mmap | Brk) and step.name is not None:
            if step.name in defined:
                earlier = defined[step.name]
                raise ctx.error(f"name: {step.name!r} is already used by step {earlier}", "name")
            defined[step.name] = step.index
            continue
        span = getattr(step, "span", None)
        if span is not None and span.region is not None and span.region not in defined:
            problem = f"region: {span.region!r} is not the name of an earlier mmap step"
            raise ctx.error(problem, "region")


# ------------------------------------------------------------------------ target


class StepTarget(Protocol):
    """A process the steps act on: the host kernel's or the model's.

    Addresses and lengths are bytes. A call the kernel refuses raises ``OSError``
    with Linux's errno. Counts are page-table pages as ``VmPTE`` counts them
    (PTE + PMD + PUD tables, no PGD).
    """

    def mmap(self, addr: int | None, length: int, prot: str, flags: frozenset[str]) -> int: ...

    def touch(self, addr: int, length: int, stride: int, write: bool) -> None: ...

    def munmap(self, addr: int, length: int) -> None: ...

    def mprotect(self, addr: int, length: int, prot: str) -> None: ...

    def madvise(self, addr: int, length: int, advice: str) -> None: ...

    def mremap(self, old_addr: int, old_len: int, new_len: int, new_addr: int | None) -> int: ...

    def fork(self) -> int:
        """Fork; return the child's page-table pages, measured with the child quiescent."""
        ...

    def brk(self, delta: int) -> int:
        """Move the program break by ``delta`` bytes; return the old break."""
        ...

    def pt_pages(self) -> int:
        """``VmPTE/4``: the process's PTE + PMD + PUD tables."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StepResult:
    """The target's table count after one step, and its change over the step.

    For a fork, ``child_pt_pages`` is the child's count and ``child_delta`` that
    count minus the count of a child forked before the first step (the target's own
    baseline: a Python process on the host, an empty process in the model).
    """

    index: int
    op: str
    line: int | None
    pt_pages: int
    delta: int
    address: int | None = None
    child_pt_pages: int | None = None
    child_delta: int | None = None


# ---------------------------------------------------------------------- layout


#: layout marks after the protection letters: a file-backed (or shared anonymous)
#: mapping, and the part of one that mremap grew past the end of its file
_FILE, _BEYOND_EOF = "F", "!"
_MARKS = _FILE + _BEYOND_EOF


class _Layout:
    """The mapped ranges and their protections, to refuse touches that would fault."""

    __slots__ = ("_segs",)

    def __init__(self) -> None:
        self._segs: list[tuple[int, int, str]] = []  # sorted, disjoint (start, end, prot)

    def remove(self, start: int, end: int) -> None:
        out: list[tuple[int, int, str]] = []
        for s, e, p in self._segs:
            if e <= start or s >= end:
                out.append((s, e, p))
                continue
            if s < start:
                out.append((s, start, p))
            if e > end:
                out.append((end, e, p))
        self._segs = out

    def add(self, start: int, end: int, prot: str) -> None:
        self.remove(start, end)
        bisect.insort(self._segs, (start, end, prot))

    def segments(self, start: int, end: int) -> list[tuple[int, int, str]]:
        """The mapped pieces of [start, end), clipped, with their protections."""
        return [(max(s, start), min(e, end), p) for s, e, p in self._segs if s < end and e > start]

    def protect(self, start: int, end: int, prot: str) -> None:
        for s, e, old in self.segments(start, end):
            self.add(s, e, prot + "".join(c for c in old if c in _MARKS))

    def prot_at(self, addr: int) -> str:
        """The protection of the segment holding ``addr``."""
        i = bisect.bisect_right(self._segs, (addr, 1 << 64, "~")) - 1
        if i < 0 or not self._segs[i][0] <= addr < self._segs[i][1]:
            raise LookupError(addr)
        return self._segs[i][2]

    def segment_end(self, addr: int) -> int:
        i = bisect.bisect_right(self._segs, (addr, 1 << 64, "~")) - 1
        return self._segs[i][1]

    def check_touch(self, start: int, length: int, stride: int, write: bool) -> str | None:
        """Why touching would fault (an unmapped or protected byte), or None."""
        k, count = 0, -(-length // stride)
        while k < count:
            addr = start + k * stride
            try:
                prot = self.prot_at(addr)
            except LookupError:
                return f"address {addr:#x} is not mapped"
            if _BEYOND_EOF in prot:
                return f"address {addr:#x} lies past the end of its file (grown by mremap): SIGBUS"
            allowed = "w" in prot if write else bool({"r", "w"} & set(prot))
            if not allowed:
                shown = "".join(c for c in prot if c not in _MARKS)
                how = "write" if write else "read"
                return f"address {addr:#x} is mapped {shown!r}: a {how} faults"
            k = max(k + 1, -(-(self.segment_end(addr) - start) // stride))
        return None


# ------------------------------------------------------------------------ runner


class _Runner:
    """Applies steps to one target, tracking named regions and the mapped layout."""

    __slots__ = ("brk_grown", "file", "layout", "regions", "target")

    def __init__(self, target: StepTarget, file: str | None) -> None:
        self.target = target
        self.file = file
        self.regions: dict[str, tuple[int, int]] = {}
        self.layout = _Layout()
        self.brk_grown = 0

    def error(self, step: Step, problem: str) -> InputError:
        return InputError(
            f"step {step.index} ({step.op}): {problem}", file=self.file, line=step.line
        )

    def resolve(self, step: Step, span: Span) -> tuple[int, int]:
        """The (address, length) a span denotes now."""
        if span.region is None:
            assert span.addr is not None and span.length is not None
            return span.addr + span.offset, span.length
        base, size = self.regions[span.region]
        if span.length is None and span.offset >= size:
            raise self.error(step, f"offset {span.offset:#x} is past the end of {span.region!r}")
        return base + span.offset, size - span.offset if span.length is None else span.length

    def apply(self, step: Step) -> int | None:
        """Apply one step; return the address mmap/mremap produced."""
        t = self.target
        match step:
            case Mmap():
                addr = t.mmap(step.addr, step.length, step.prot, step.flags)
                self.regions[step.name] = (addr, step.length)
                backed = bool({"file", "shared"} & step.flags)
                self.layout.add(addr, addr + step.length, step.prot + (_FILE if backed else ""))
                return addr
            case Touch():
                start, length = self.resolve(step, step.span)
                why = self.layout.check_touch(start, length, step.stride, step.write)
                if why is not None:
                    raise self.error(step, f"touch would fault: {why}")
                t.touch(start, length, step.stride, step.write)
            case Munmap():
                start, length = self.resolve(step, step.span)
                t.munmap(start, length)
                self.layout.remove(start, start + length)
            case Mprotect():
                start, length = self.resolve(step, step.span)
                t.mprotect(start, length, step.prot)
                self.layout.protect(start, start + length, step.prot)
            case Madvise():
                start, length = self.resolve(step, step.span)
                t.madvise(start, length, step.advice)
            case Mremap():
                return self.apply_mremap(step)
            case Brk():
                return self.apply_brk(step)
        return None

    def apply_brk(self, step: Brk) -> int:
        if step.delta < 0 and -step.delta > self.brk_grown:
            raise self.error(step, "shrink: below the break the first brk step found")
        old = self.target.brk(step.delta)
        self.brk_grown += step.delta
        if step.delta > 0:
            self.layout.add(old, old + step.delta, "rw")
            if step.name is not None:
                self.regions[step.name] = (old, step.delta)
        else:
            self.layout.remove(old + step.delta, old)
        return old

    def apply_mremap(self, step: Mremap) -> int:
        start, length = self.resolve(step, step.span)
        try:
            prot = self.layout.prot_at(start)
        except LookupError:
            raise self.error(step, f"address {start:#x} is not mapped") from None
        addr = self.target.mremap(start, length, step.new_length, step.new_addr)
        kept = self.layout.segments(start, start + min(length, step.new_length))
        self.layout.remove(start, start + length)
        for s, e, p in kept:  # every piece moves by the same offset, gaps stay gaps
            self.layout.add(s - start + addr, e - start + addr, p)
        if step.new_length > length:  # one VMA grown (in place or moved)
            grown = kept[-1][2] if kept else prot
            if _FILE in grown:  # the file did not grow: touching there is SIGBUS
                grown += _BEYOND_EOF
            self.layout.add(addr + length, addr + step.new_length, grown)
        name = step.span.region
        if name is not None and step.span.offset == 0 and length == self.regions[name][1]:
            self.regions[name] = (addr, step.new_length)
        return addr


def run_steps(
    steps: StepsFile | Sequence[Step],
    target: StepTarget,
    *,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Apply ``steps`` to ``target``; return its table count after each step.

    A touch that would fault (unmapped or protected) and a call the kernel refuses
    are :class:`InputError`\\ s naming the step. The baseline is the count before the
    first step; if any step forks, a baseline child is forked first.
    """
    file = steps.path if isinstance(steps, StepsFile) else None
    seq = steps.steps if isinstance(steps, StepsFile) else tuple(steps)
    runner = _Runner(target, file)
    child_base = target.fork() if any(isinstance(s, Fork) for s in seq) else None
    prev = target.pt_pages()
    results: list[StepResult] = []
    for step in seq:
        child: int | None = None
        try:
            address = runner.apply(step)
            if isinstance(step, Fork):
                child = target.fork()
        except OSError as err:
            raise runner.error(step, f"the kernel refused it: {err.strerror or err}") from None
        except OutOfMemory as err:
            problem = f"the target ran out of memory ({err}); a model needs a larger --memory"
            raise runner.error(step, problem) from None
        pages = target.pt_pages()
        child_delta = None if child is None or child_base is None else child - child_base
        result = StepResult(
            step.index, step.op, step.line, pages, pages - prev, address, child, child_delta
        )
        results.append(result)
        prev = pages
        if on_step is not None:
            on_step(result)
    return results


# -------------------------------------------------------------------- comparing


@dataclass(frozen=True, slots=True)
class ConformRow:
    """One step as both sides saw it; a side that did not run is None."""

    index: int
    op: str
    sim: StepResult | None
    host: StepResult | None

    @property
    def match(self) -> bool | None:
        """Deltas agree (and, for fork, the children's deltas); None with one side."""
        if self.sim is None or self.host is None:
            return None
        return (self.sim.delta, self.sim.child_delta) == (self.host.delta, self.host.child_delta)

    def to_json(self) -> dict[str, Any]:
        sim, host = self.sim, self.host
        doc: dict[str, Any] = {
            "index": self.index,
            "op": self.op,
            "sim_pt_pages": None if sim is None else sim.pt_pages,
            "sim_delta": None if sim is None else sim.delta,
            "host_pt_pages": None if host is None else host.pt_pages,
            "host_delta": None if host is None else host.delta,
            "match": self.match,
        }
        if self.op == "fork":
            doc["child_sim_pt_pages"] = None if sim is None else sim.child_pt_pages
            doc["child_host_pt_pages"] = None if host is None else host.child_pt_pages
        return doc


def compare_results(
    steps: StepsFile | Sequence[Step],
    sim: Sequence[StepResult] | None,
    host: Sequence[StepResult] | None,
) -> list[ConformRow]:
    """Line up the two runs of the same steps, step by step."""
    seq = steps.steps if isinstance(steps, StepsFile) else tuple(steps)
    rows = []
    for i, step in enumerate(seq):
        rows.append(
            ConformRow(
                step.index,
                step.op,
                None if sim is None else sim[i],
                None if host is None else host[i],
            )
        )
    return rows


def conform_document(rows: Iterable[ConformRow]) -> dict[str, Any]:
    """``{"steps": [...], "mismatches": N}`` (the ``kpsim conform --json`` document)."""
    docs = [row.to_json() for row in rows]
    return {"steps": docs, "mismatches": sum(1 for d in docs if d["match"] is False)}


# ---------------------------------------------------------------- the model side

SIMTARGET_MODULE = "kpsim.workloads.simtarget"


def load_simtarget() -> tuple[ModuleType | None, str]:
    """Import the model side lazily: (module, "") or (None, why it is not available).

    ``kpsim.workloads.simtarget`` provides ``make_sim_target(args)`` (a
    :class:`StepTarget`) and ``model_pt_pages_for_present(ranges)``.
    """
    try:
        return importlib.import_module(SIMTARGET_MODULE), ""
    except ModuleNotFoundError as err:
        if err.name == SIMTARGET_MODULE:
            return None, f"{SIMTARGET_MODULE} does not exist yet"
        return None, f"{SIMTARGET_MODULE} failed to import: {err}"
    except ImportError as err:
        return None, f"{SIMTARGET_MODULE} failed to import: {err}"
