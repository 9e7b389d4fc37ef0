"""Snapshots of a live process's address space and the page-table bounds they imply.

Reads ``/proc/PID/maps`` and the present/swapped bits of ``/proc/PID/pagemap``
(``pt-lifecycle.md`` §4), through the ``PAGEMAP_SCAN`` ioctl where the kernel has
it (§6: resume from max(``walk_end``, end of the last range); scan no further than
the user address limit) and by reading 8-byte entries otherwise. From the maps and
the mapped pages it computes the lower bound (slots holding a mapped page) and the
upper bound (slots overlapped by a VMA) on ``VmPTE/4`` (§4, rule 10).

The target is measured quiescent (``kpsim.workloads.host.quiescent``) with
``VmPTE`` read before and after the walk. Left out: hugetlbfs VMAs (their tables
differ), the PGD, and the x86 PTI/LDT case of §2.2.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpsim.errors import InputError, last_line, read_input_text
from kpsim.workloads.host import HostError, quiescent, vmpte_pages

PAGE_SHIFT = 12
#: VA shift of the slot one table spans: PTE 2 MiB, PMD 1 GiB, PUD 512 GiB (§1).
LEVEL_SHIFTS = {"pte": 21, "pmd": 30, "pud": 39}
PAGEMAP_SCAN = 0xC0606610
PAGE_IS_PRESENT, PAGE_IS_SWAPPED = 1 << 3, 1 << 4
#: Highest end a PAGEMAP_SCAN may ask for (§6); arm64's is the 48-bit VA size.
USER_LIMIT = {"x86_64": (1 << 47) - 4096, "aarch64": 1 << 48, "riscv64": 1 << 47}
SNAPSHOT_FORMAT = 1

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Vma:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    offset: int
    path: str


@dataclass(frozen=True, slots=True)
class Bounds:
    """Lower and upper bounds on ``VmPTE/4``, with their per-level parts (pte, pmd, pud)."""

    lower: int
    upper: int
    lower_levels: tuple[int, int, int]
    upper_levels: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A quiescent process's VMAs and mapped (present or swapped) page ranges."""

    pid: int
    machine: str
    vmpte_pages: int
    vmas: tuple[Vma, ...]
    present: tuple[Range, ...]
    method: str
    quiescence: str
    #: per VMA (same order as ``vmas``): its ``/proc/PID/smaps`` ``VmFlags`` mnemonics
    #: and ``Anonymous`` kB, or empty when smaps was not read
    smaps: tuple[tuple[str, int], ...] = ()


# ------------------------------------------------------------------ bounds


def count_slots(ranges: Iterable[Range], shift: int) -> int:
    """Size of the union of ``[start >> shift, (end - 1) >> shift]`` over the ranges."""
    spans = sorted((s >> shift, (e - 1) >> shift) for s, e in ranges if e > s)
    total, cur_lo, cur_hi = 0, -1, -2
    for lo, hi in spans:
        if lo > cur_hi + 1:
            total += cur_hi - cur_lo + 1 if cur_hi >= cur_lo else 0
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    return total + (cur_hi - cur_lo + 1 if cur_hi >= cur_lo else 0)


def _levels(ranges: Sequence[Range]) -> tuple[int, int, int]:
    pte, pmd, pud = (count_slots(ranges, LEVEL_SHIFTS[lv]) for lv in ("pte", "pmd", "pud"))
    return pte, pmd, pud


def pt_bounds(vmas: Iterable[Vma], present: Sequence[Range]) -> Bounds:
    """§4: tables implied by mapped pages ≤ ``VmPTE/4`` ≤ tables implied by VMAs."""
    lower = _levels(present)
    upper = _levels([(v.start, v.end) for v in vmas])
    return Bounds(sum(lower), sum(upper), lower, upper)


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, adjacent ranges joined (duplicates and overlaps dropped)."""
    out: list[Range] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


# -------------------------------------------------------------------- maps


def parse_maps(text: str) -> list[Vma]:
    """Parse ``/proc/PID/maps`` text."""
    vmas = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        path = fields[5] if len(fields) > 5 else ""
        vmas.append(Vma(start, end, fields[1], int(fields[2], 16), path))
    return vmas


def user_vmas(vmas: Iterable[Vma], machine: str | None = None) -> list[Vma]:
    """Drop ``[vsyscall]`` and anything past the user limit: not in the user tables."""
    limit = USER_LIMIT.get(machine or platform.machine(), 1 << 64)
    return [v for v in vmas if v.path != "[vsyscall]" and v.start < limit]


# ----------------------------------------------------------------- pagemap


class _PmScanArg(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            *("size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages"),
            *("category_inverted", "category_mask", "category_anyof_mask", "return_mask"),
        )
    ]


class _PageRegion(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    ]


def pagemap_scan(fd: int, start: int, end: int, *, vec_len: int = 1024) -> list[Range]:
    """Present-or-swapped ranges in [start, end) by the ``PAGEMAP_SCAN`` ioctl.

    Raises ``OSError`` where the kernel lacks it (ENOTTY, EINVAL) or refuses the range.
    """
    vec = (_PageRegion * vec_len)()
    mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
    found: list[Range] = []
    cur = start
    while cur < end:
        arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), start=cur, end=end)
        arg.vec, arg.vec_len = ctypes.addressof(vec), vec_len
        arg.category_anyof_mask = arg.return_mask = mask
        n = fcntl.ioctl(fd, PAGEMAP_SCAN, arg, True)
        found.extend((vec[i].start, vec[i].end) for i in range(n))
        # §6 quirk: with a full buffer walk_end may lag behind the last range returned.
        nxt = max(arg.walk_end, vec[n - 1].end if n else 0)
        if nxt <= cur:
            raise OSError(errno.EIO, f"PAGEMAP_SCAN made no progress at {cur:#x}")
        cur = nxt
    return merge_ranges(found)


def pagemap_read(fd: int, vmas: Iterable[Vma], *, chunk_pages: int = 1 << 20) -> list[Range]:
    """Present-or-swapped ranges read entry by entry (bits 63 and 62 of each entry)."""
    found: list[Range] = []
    for vma in vmas:
        for first in range(vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT, chunk_pages):
            count = min(chunk_pages, (vma.end >> PAGE_SHIFT) - first)
            data = os.pread(fd, count * 8, first * 8)
            entries = np.frombuffer(data, dtype="<u8")
            mapped = np.concatenate(([False], (entries >> np.uint64(62)) != 0, [False]))
            edges = np.flatnonzero(mapped[1:] != mapped[:-1])
            for lo, hi in zip(edges[::2], edges[1::2], strict=True):
                found.append(((first + int(lo)) << PAGE_SHIFT, (first + int(hi)) << PAGE_SHIFT))
    return merge_ranges(found)


def scan_present(
    pid: int, vmas: Sequence[Vma], machine: str | None = None
) -> tuple[list[Range], str]:
    """Mapped page ranges of ``pid`` and how they were read (``pagemap_scan``/``pagemap_read``)."""
    if not vmas:
        return [], "none"
    limit = USER_LIMIT.get(machine or platform.machine(), 1 << 64)
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as err:
        raise HostError(f"cannot open /proc/{pid}/pagemap: {err.strerror}") from None
    try:
        try:
            end = min(max(v.end for v in vmas), limit)
            return pagemap_scan(fd, min(v.start for v in vmas), end), "pagemap_scan"
        except OSError:
            return pagemap_read(fd, vmas), "pagemap_read"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- snapshot


def parse_smaps(text: str) -> dict[int, tuple[str, int]]:
    """``/proc/PID/smaps``: VMA start -> (``VmFlags`` mnemonics, ``Anonymous`` kB)."""
    out: dict[int, tuple[str, int]] = {}
    start: int | None = None
    anon = 0
    for line in text.splitlines():
        head = line.split(maxsplit=1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            start, anon = int(head.split("-")[0], 16), 0
        elif head == "Anonymous:":
            anon = int(line.split()[1])
        elif head == "VmFlags:" and start is not None:
            out[start] = (" ".join(line.split()[1:]), anon)
    return out


def read_smaps(pid: int, vmas: Sequence[Vma]) -> tuple[tuple[str, int], ...]:
    """Per VMA of ``vmas``: its smaps ``VmFlags`` and ``Anonymous`` kB (empty if unreadable)."""
    try:
        found = parse_smaps(Path(f"/proc/{pid}/smaps").read_text())
    except OSError:
        return ()
    if any(v.start not in found for v in vmas):
        return ()
    return tuple(found[v.start] for v in vmas)


def _read_maps(pid: int) -> list[Vma]:
    try:
        return parse_maps(Path(f"/proc/{pid}/maps").read_text())
    except FileNotFoundError:
        raise InputError(f"no process with pid {pid}") from None
    except PermissionError:
        raise InputError(f"not allowed to read /proc/{pid}/maps") from None


def take_snapshot(pid: int, *, may_stop: bool = True, attempts: int = 3) -> Snapshot:
    """Maps, mapped pages and ``VmPTE`` of a quiescent ``pid`` (VmPTE equal before and after)."""
    if pid == os.getpid():
        raise InputError("kpsim cannot snapshot itself: it is not quiescent while it reads")
    if not Path(f"/proc/{pid}").exists():
        raise InputError(f"no process with pid {pid}")
    machine = platform.machine()
    try:
        vmpte_pages(pid)
    except HostError as err:
        raise InputError(str(err)) from None
    for _ in range(attempts):
        with quiescent(pid, may_stop=may_stop) as how:
            before = vmpte_pages(pid)
            vmas = user_vmas(_read_maps(pid), machine)
            present, method = scan_present(pid, vmas, machine)
            smaps = read_smaps(pid, vmas)
            after = vmpte_pages(pid)
        if before == after:
            return Snapshot(pid, machine, after, tuple(vmas), tuple(present), method, how, smaps)
    raise HostError(f"VmPTE of process {pid} changed during every walk: it is not quiescent")


@dataclass(frozen=True, slots=True)
class Check:
    """``kpsim snapshot --check``: the live count against the model and the bounds."""

    pid: int
    vmpte_pages: int
    model_pt_pages: int
    bounds: Bounds
    model_available: bool

    @property
    def exact(self) -> bool:
        return self.vmpte_pages == self.model_pt_pages

    @property
    def within_bounds(self) -> bool:
        return self.bounds.lower <= self.vmpte_pages <= self.bounds.upper

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "vmpte_pages": self.vmpte_pages,
            "model_pt_pages": self.model_pt_pages,
            "lower": self.bounds.lower,
            "upper": self.bounds.upper,
            "exact": self.exact,
        }


def check_snapshot(snap: Snapshot, model: Any | None) -> Check:
    """Compare the live count with the model's for the same present pages.

    ``model`` is the ``kpsim.workloads.simtarget`` module (its
    ``model_pt_pages_for_snapshot(snap)``: a simulated process with the same VMAs and
    present pages, or else ``model_pt_pages_for_present(ranges)``), or None: then
    the lower bound stands in.
    """
    bounds = pt_bounds(snap.vmas, snap.present)
    if model is None:
        return Check(snap.pid, snap.vmpte_pages, bounds.lower, bounds, False)
    build = getattr(model, "model_pt_pages_for_snapshot", None)
    if build is not None:
        count = int(build(snap))
    else:
        count = int(model.model_pt_pages_for_present(list(snap.present)))
    return Check(snap.pid, snap.vmpte_pages, count, bounds, True)


# ------------------------------------------------------------------ files


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    """The replayable document ``kpsim snapshot -o`` writes (addresses in hex)."""
    return {
        "format": SNAPSHOT_FORMAT,
        "pid": snap.pid,
        "machine": snap.machine,
        "vmpte_pages": snap.vmpte_pages,
        "method": snap.method,
        "quiescence": snap.quiescence,
        "maps": [
            {
                "start": hex(v.start),
                "end": hex(v.end),
                "perms": v.perms,
                "offset": hex(v.offset),
                "path": v.path,
            }
            for v in snap.vmas
        ],
        "present": [[hex(s), hex(e)] for s, e in snap.present],
        "smaps": [[flags, anon] for flags, anon in snap.smaps],
    }


def snapshot_from_json(doc: Any, *, file: str | None = None, text: str | None = None) -> Snapshot:
    """Read back what :func:`snapshot_to_json` wrote. A field that is missing or has
    the wrong type is an :class:`InputError` naming it (``maps[2].start: ...``) and,
    given the document's ``text``, the line of its key (a missing one: the last line)."""
    at: list[str | int] = []  # the path being read, for the error
    base: list[str | int] = []  # the object being read

    def field(obj: Any, key: str) -> Any:
        at[:] = [*base, key]
        if not isinstance(obj, dict):
            raise TypeError(f"expected an object, got {type(obj).__name__}")
        if key not in obj:
            raise KeyError(key)
        return obj[key]

    def items(obj: Any) -> list[Any]:
        if not isinstance(obj, list):
            raise TypeError(f"expected a list, got {type(obj).__name__}")
        return obj

    def hexint(obj: Any, key: str) -> int:
        value = field(obj, key)
        if not isinstance(value, str):
            raise TypeError(f"expected a hex string, got {type(value).__name__}")
        return int(value, 16)

    try:
        fmt = field(doc, "format")
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(
                f"unknown snapshot format {fmt!r} (this kpsim reads {SNAPSHOT_FORMAT})"
            )
        vmas = []
        for i, m in enumerate(items(field(doc, "maps"))):
            at[:] = base[:] = ["maps", i]
            vma = Vma(hexint(m, "start"), hexint(m, "end"), str(field(m, "perms")),
                      hexint(m, "offset"), str(field(m, "path")))  # fmt: skip
            vmas.append(vma)
        base.clear()
        present = []
        for i, pair in enumerate(items(field(doc, "present"))):
            at[:] = ["present", i]
            s, e = items(pair)
            present.append((int(s, 16), int(e, 16)))
        smaps = []
        for i, pair in enumerate(items(doc.get("smaps", []))):
            at[:] = ["smaps", i]
            f, a = items(pair)
            smaps.append((str(f), int(a)))
        values = []
        for key in ("pid", "machine", "vmpte_pages", "method", "quiescence"):
            value = field(doc, key)
            values.append(int(value) if key in ("pid", "vmpte_pages") else str(value))
        pid, machine, vmpte, method, quiescence = values
        return Snapshot(int(pid), str(machine), int(vmpte), tuple(vmas), tuple(present),
                        str(method), str(quiescence), tuple(smaps))  # fmt: skip
    except (KeyError, TypeError, ValueError, OverflowError) as err:  # Infinity: Overflow
        name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in at).lstrip(".")
        missing = isinstance(err, KeyError)
        problem = f"missing field {name}" if missing else f"{name or 'document'}: {err}"
        line = None if text is None else _json_key_line(text, at, missing)
        raise InputError(f"not a kpsim snapshot: {problem}", file=file, line=line) from None


def _json_key_line(text: str, at: Sequence[str | int], missing: bool) -> int:
    """The line of the value at path ``at`` in the JSON ``text`` (of its parent when the
    last key is ``missing``; the last line for a missing top-level key). Found by text
    search: a key is its next quoted occurrence, a list element the next so many ``{``
    (``maps``) or ``[`` (pairs) after the list opens: exact for what ``kpsim snapshot
    -o`` writes, approximate for a hand-edited file with brackets inside strings."""
    keys = list(at[:-1]) if missing else list(at)
    if not keys:
        return last_line(text)
    pos = 0
    for i, k in enumerate(keys):
        if isinstance(k, str):
            found = text.find(f'"{k}"', pos)
        else:
            opening = "{" if keys[i - 1] == "maps" else "["
            found = text.find("[", pos)  # the list itself
            for _ in range(k + 1):
                found = text.find(opening, found + 1) if found >= 0 else -1
        if found < 0:
            return last_line(text)
        pos = found + 1
    return text.count("\n", 0, pos) + 1


def load_snapshot(path: str | Path) -> Snapshot:
    """Load a snapshot file written by ``kpsim snapshot -o``."""
    text = read_input_text(path, "snapshot")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"not JSON: {err.msg}", file=str(path), line=err.lineno) from None
    except RecursionError:  # [[[[...: nested deeper than the parser's stack
        raise InputError("not JSON: nested too deeply", file=str(path), line=1) from None
    return snapshot_from_json(doc, file=str(path), text=text)
