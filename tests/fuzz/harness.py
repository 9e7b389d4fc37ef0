"""The fuzz harness: every input format through the real CLI entry point, judged alike.

One case is an input (a file's bytes, or a command line) fed to ``kpsim.cli.main.main``
in this process, with its stdout and stderr captured. A case passes when

- nothing escapes ``main`` but its return value or ``SystemExit`` (no traceback);
- the status is 0, 1 or 2;
- a rejection (status 2) prints exactly one line on stderr, ``kpsim VERB: ...``,
  which for a file input names the file and a line of it, ``FILE:N: problem`` (a
  problem with the whole file, such as a missing table, is named at its last line).

To keep the cost of a case to parsing and validation, ``Machine.boot`` is replaced by
a stub that raises :class:`Accepted` (everything before the boot ran: the input was
accepted). Every Nth accepted case can also run for real, under a CPU budget
(:func:`run_real`, ``python -m tests.fuzz --real-every N``). Snapshots have no verb that reads
them back, so that format calls ``kpsim.workloads.snapshot.load_snapshot`` and judges
its ``InputError`` by the same rules.

Formats (:data:`FORMATS`): ``cli`` (option values of the machine verbs), ``scenario``
(``kpsim run FILE``), ``steps`` (``kpsim conform --sim-only --steps FILE``), ``trace``
(``kpsim replay FILE``), ``schedule`` (``kpsim explore --replay FILE``), ``snapshot``,
``grid`` (``kpsim sweep GRID``: the results database it would open is stubbed too).
Mutation is seeded (:func:`mutate`): the same seed gives the same cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpsim.cli.main import main
from kpsim.errors import InputError
from kpsim.machine.boot import Machine

ROOT = Path(__file__).resolve().parents[2]


class Accepted(Exception):
    """Raised by the boot stub: the input got as far as booting a machine."""


class FuzzFailure(AssertionError):
    """A case broke the rules (the message says which, with the input)."""


class OverBudget(BaseException):
    """A real run (:func:`run_real`) used up its CPU budget: raised by a timer signal
    wherever the model is (a ``BaseException``, so the model's handlers let it pass)."""


_REAL = [False]  # inside :func:`run_real`: the boot stub boots for real


@contextlib.contextmanager
def boot_stubbed() -> Iterator[None]:
    real = Machine.__dict__["boot"]

    def stub(cls: type, config: object = None, **kw: object) -> Machine:
        if _REAL[0]:
            return real.__func__(cls, config, **kw)  # type: ignore[no-any-return]
        raise Accepted

    def no_db(*a: object, **kw: object) -> None:  # kpsim sweep: the grid was accepted
        raise Accepted

    import kpsim.cli.main as cli_main
    import kpsim.engine.results as results

    real_results = results.Results
    real_build = cli_main.build_parser
    parser = real_build()
    Machine.boot = classmethod(stub)  # type: ignore[method-assign,assignment]
    results.Results = no_db  # type: ignore[assignment,misc]
    cli_main.build_parser = lambda: parser  # type: ignore[assignment]
    try:
        yield
    finally:
        Machine.boot = real  # type: ignore[method-assign]
        results.Results = real_results  # type: ignore[misc]
        cli_main.build_parser = real_build  # type: ignore[assignment]


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        """Inputs judged (a real run of an accepted one is counted apart)."""
        return sum(v for k, v in self.outcomes.items() if not k.startswith("ran: "))


def run_argv(argv: list[str], file: str | None = None) -> str:
    """One case through ``main``; the outcome name, or ``FuzzFailure``."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 2
    except Accepted:
        return "accepted"
    except OverBudget:
        raise
    except Exception as e:
        raise FuzzFailure(f"{argv}: escaped main: {type(e).__name__}: {e}") from e
    return judge(argv, rc, err.getvalue(), file)


def run_real(argv: list[str], file: str | None, cpu_seconds: float) -> str:
    """An accepted case run again for real (the machine booted, the workload run) for
    at most ``cpu_seconds`` of CPU time; judged alike ("ran: status N"), or "ran: cut
    at the CPU budget". This is what keeps the stub honest: a value the parser accepts
    but the model cannot take shows up here as a traceback or a wrong status."""

    def expire(signum: int, frame: Any) -> None:
        if frame is not None and frame.f_code is run_real.__code__:
            return  # run_real is already unwinding the cut (its except or finally)
        f = frame
        while f is not None:  # in a finalizer the exception would only be printed: later
            if f.f_code.co_name == "__del__" or f.f_code.co_filename.endswith("weakref.py"):
                signal.setitimer(signal.ITIMER_PROF, 0.01)
                return
            f = f.f_back
        # again in 20 ms: an exception raised where Python can only print it (a generator
        # finalised by the collector, a callback from compiled code) is swallowed, and the
        # run would go on to its end
        signal.setitimer(signal.ITIMER_PROF, 0.02)
        raise OverBudget

    here = os.getcwd()
    old = signal.signal(signal.SIGPROF, expire)
    _REAL[0] = True
    with tempfile.TemporaryDirectory(dir=_FAST_TMP) as scratch:
        os.chdir(scratch)  # what a verb writes (kpsim explore's saved schedule) goes here
        signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
        try:
            outcome = run_argv(argv, file)
        except OverBudget:
            return "ran: cut at the CPU budget"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old)
            _REAL[0] = False
            os.chdir(here)
    return f"ran: {outcome}"


def judge(argv: list[str], rc: int, err: str, file: str | None) -> str:
    if rc not in (0, 1, 2):
        raise FuzzFailure(f"{argv}: exit status {rc}")
    if "Traceback (most recent call last)" in err:
        raise FuzzFailure(f"{argv}: traceback on stderr:\n{err}")
    if rc != 2:
        return f"status {rc}"
    lines = err.splitlines()
    lines = [ln for ln in lines if not re.match(r"kpsim [a-z]+: WARNING: ", ln)] or lines
    if len(lines) != 1 or not lines[0].startswith("kpsim"):
        raise FuzzFailure(f"{argv}: a rejection must be one 'kpsim VERB: ...' line, got {err!r}")
    if file is not None:
        if file not in lines[0]:
            raise FuzzFailure(f"{argv}: the rejection does not name the file: {lines[0]!r}")
        if not re.search(re.escape(file) + r":\d+: \S", lines[0]):
            raise FuzzFailure(f"{argv}: the rejection names no line of the file: {lines[0]!r}")
        return "rejected at a line"
    return "rejected"


def run_snapshot(path: str) -> str:
    """``load_snapshot`` judged as a verb would print its InputError."""
    from kpsim.workloads.snapshot import load_snapshot

    try:
        load_snapshot(path)
    except InputError as e:
        return judge(["snapshot-load", path], 2, f"kpsim snapshot: {e}\n", path)
    except Exception as e:
        raise FuzzFailure(f"load_snapshot: escaped: {type(e).__name__}: {e}") from e
    return "accepted"


# -- the formats ----------------------------------------------------------------------------
def _seeds(pattern: str, limit: int = 4000) -> list[bytes]:
    return [p.read_bytes()[:limit] for p in sorted(ROOT.glob(pattern))]


def snapshot_seeds() -> list[bytes]:
    """A small valid snapshot document, as ``kpsim snapshot -o`` writes one (indented)
    and on one line."""
    doc = json.loads(snapshot_seed())
    return [json.dumps(doc, indent=1).encode() + b"\n", snapshot_seed()]


def snapshot_seed() -> bytes:
    """A small valid snapshot document on one line."""
    from kpsim.workloads.snapshot import Snapshot, parse_maps, snapshot_to_json, user_vmas

    maps = "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0 [heap]\n"
    vmas = tuple(user_vmas(parse_maps(maps), "x86_64"))
    snap = Snapshot(4242, "x86_64", 3, vmas, ((0x55D0C0A00000, 0x55D0C0A03000),),
                    "pagemap_scan", "blocked")  # fmt: skip
    return json.dumps(snapshot_to_json(snap)).encode()


SCHEDULE_SEED = (
    b"# kpsim explore schedule\nseries v7\nworkload guarded-paths\nmemory 256M\ncpus 2\n"
    b"seed 0\nbatching on\npoe on\nhardened_pgtables on\ninject 3 irq  # at x\n"
)
#: the same on x86 (its ``arch`` line, a step x86 has and one it refuses)
SCHEDULE_SEED_X86 = (
    b"# kpsim explore schedule\narch x86\nseries enter-leave\nworkload guarded-paths\n"
    b"memory 256M\ncpus 2\ndisable reset-on-entry\ndisable isb-after-por-write\n"
    b"inject 2 irq-free  # at pkrs_write:after\n"
)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    seeds: Callable[[], list[bytes]]
    argv: Callable[[str], list[str]]


FILE_FORMATS = {
    "scenario": Format(
        "scenario", ".toml", lambda: _seeds("examples/scenarios/*.toml"), lambda p: ["run", p]
    ),
    "steps": Format(
        "steps",
        ".toml",
        lambda: _seeds("examples/steps/*.toml"),
        lambda p: ["conform", "--sim-only", "--steps", p],
    ),
    "trace": Format(
        "trace",
        ".trace",
        lambda: _seeds("tests/data/traces/*.trace", 1500),
        lambda p: ["replay", p],
    ),
    "schedule": Format(
        "schedule",
        ".sched",
        lambda: [SCHEDULE_SEED, SCHEDULE_SEED_X86],
        lambda p: ["explore", "--replay", p],
    ),
    "snapshot": Format("snapshot", ".json", snapshot_seeds, lambda p: []),
    "grid": Format(
        "grid", ".toml", lambda: _seeds("examples/grids/*.toml"), lambda p: ["sweep", p]
    ),
}
FORMATS = ("cli", *FILE_FORMATS)

#: tokens the mutator splices in: the values parsers trip over
TOKENS = [
    b"-1", b"0", b"1", b"4096", b"18446744073709551616", b"1e309", b"nan", b"inf", b"0x",
    b"0xfffffffffffff", b"1G", b"512T", b"3M", b"-0", b'"', b"'", b"[", b"]", b"{", b"}",
    b"=", b",", b":", b"#", b"\\", b"\n", b"\r\n", b"\t", b"\x00", b"\xff", b"\xc3\xa9",
    b"\xf0\x9f\x92\xa5", b"true", b"false", b"[[step]]", b"[[workload]]", b"[kernel]",
    b"[machine]", b"op = ", b'name = "', b"inject ", b"series ", b"memory ", b"/", b"@",
    b"probability=", b"fail_page_alloc", b"1,100,0,-1", b" ", b"  # ", b"1" * 40,
]  # fmt: skip


def mutate(data: bytes, r: random.Random, pool: list[bytes]) -> bytes:
    """A few seeded byte-, token- and line-level mutations of ``data``."""
    b = bytearray(data)
    for _ in range(r.choice((1, 1, 2, 3, 6))):
        op = r.randrange(8)
        pos = r.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(pos, len(b) - 1)] = r.randrange(256)
        elif op == 1:  # insert a token
            b[pos:pos] = r.choice(TOKENS)
        elif op == 2 and b:  # delete a span
            del b[pos : pos + r.randrange(1, 16)]
        elif op == 3 and b:  # replace a number or word by a token
            m = list(re.finditer(rb"[0-9A-Za-z_.x]+", bytes(b)))
            if m:
                w = r.choice(m)
                b[w.start() : w.end()] = r.choice(TOKENS)
        elif op == 4:  # duplicate or drop a line
            lines = bytes(b).split(b"\n")
            i = r.randrange(len(lines))
            if r.random() < 0.5:
                lines.insert(i, lines[i])
            else:
                del lines[i]
            b = bytearray(b"\n".join(lines))
        elif op == 5 and pool:  # splice from another seed
            other = r.choice(pool)
            j = r.randrange(len(other) + 1)
            b[pos:] = other[j : j + r.randrange(1, 200)] + bytes(b[pos:])
        elif op == 6 and b:  # truncate
            del b[pos:]
        else:  # swap two lines
            lines = bytes(b).split(b"\n")
            i, j = r.randrange(len(lines)), r.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            b = bytearray(b"\n".join(lines))
    return bytes(b[:20000])


# -- command-line values ------------------------------------------------------------------------
VERBS = ("boot", "run", "audit", "kunit", "explore", "pba", "ptdump", "walk", "replay", "compare",
         "decode")  # fmt: skip
OPTIONS: dict[str, list[str]] = {
    "--memory": ["4G", "256M", "1T", "3M", "0", "-1G", "4g", "0x40000000", "1.5G", "128T", "129T"],
    "--cpus": ["1", "2", "256", "0", "-3", "999", "x", "0x2"],
    "--linear-map": ["pte", "block", "PTE", ""],
    "--seed": ["0", "7", "-1", "2**64", "18446744073709551616"],
    "--allocator": ["minimal", "pba", "grouped", "reserve", "slab"],
    "--series": ["v7", "v6", "v4", "v9", "enter-leave"],
    "--fail-page-alloc": ["1,10,0,-1", "probability=5,times=-1", "min_order=1", "1,2", "x"],
    "--fail-pagetable-alloc": ["times=3", "interval=0", "probability=100,times=1"],
    "--fail-set-memory-pkey": ["unkey=1", "unkey=2", "verbose=1,probability=1"],
    "--fail-split": ["1,100,0,1", "space=5", "probability=-1"],
    "--fail-pba-refill": ["times=-1", "times=-2", ""],
    "--scale": ["1", "64", "65", "0"],
    "--ops": ["1", "0", "100000001"],
    "--schedules": ["1", "0", "-5"],
    "--audit-every": ["1", "0"],
    "--workload": ["mixed", "none", "soak", "nope"],
    "--arch": ["arm64", "x86", "riscv", "X86", ""],
    "--rows": ["fork", "fix_size_alloc/p:1,h:0", "forks", "", "all,-kernbench", "-fork"],
    "--size": ["64M", "4M", "0", "1T", "x", "-4M"],
    "--loops": ["1", "0", "-1", "50", "1e3"],
    "--table": ["v5-corrected", "v4", "v9"],
}
FLAGS = ["--no-poe", "--no-batching", "--allow-unsafe-split", "--no-hardened-pgtables", "--json",
         "--both-arches"]  # fmt: skip
#: decode's WHAT VALUE: arm64 and x86 registers, names --arch x86 refuses, a bad value
DECODE = [("pte", "0x10e80008ffbbb707"), ("pmd", "0x80000001002000e3"), ("esr", "0x1"),
          ("por", "0x57"), ("pf-error", "0x23"), ("pkrs", "0x100000000"),
          ("x86-pte", "zz")]  # fmt: skip


def cli_case(r: random.Random) -> list[str]:
    argv = [r.choice(VERBS)]
    for _ in range(r.randrange(1, 5)):
        if r.random() < 0.2:
            argv.append(r.choice(FLAGS))
            continue
        opt = r.choice(list(OPTIONS))
        val = r.choice(OPTIONS[opt])
        if r.random() < 0.3:
            val = mutate(val.encode(), r, []).decode("utf-8", "replace")
        argv += [opt, val]
    if argv[0] in ("walk",):
        argv.append(r.choice(["0xffff000000000000", "0", "zz"]))
    if argv[0] == "replay":
        argv.append(str(ROOT / "tests/data/traces/true.trace"))
    if argv[0] == "decode":
        argv += list(r.choice(DECODE))
    return argv


#: a file is written per case: on a RAM file system when there is one (each write to a
#: disk-backed temporary directory can cost more than the case it feeds)
_FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# -- the driver ---------------------------------------------------------------------------------
#: formats whose accepted cases :func:`run_real` can run (a grid would run every point
#: of it into a results database; a snapshot has no machine)
REAL_FORMATS = ("cli", "scenario", "steps", "trace", "schedule")


def fuzz(
    fmt: str,
    cases: int,
    seed: int = 0,
    *,
    stop_on_failure: bool = True,
    real_every: int = 0,
    real_cpu: float = 0.5,
) -> Tally:
    """``cases`` seeded mutational cases of ``fmt``; failures collected (or raised).
    With ``real_every`` N, every Nth accepted case is also run for real
    (:func:`run_real`, ``real_cpu`` seconds of CPU at most)."""
    r = random.Random(f"kpsim-fuzz:{fmt}:{seed}")
    tally = Tally()
    if fmt not in REAL_FORMATS:
        real_every = 0
    accepted = [0]

    def case(argv: list[str], file: str | None) -> str:
        outcome = run_argv(argv, file)
        if outcome == "accepted" and real_every:
            accepted[0] += 1
            if accepted[0] % real_every == 0:
                tally.outcomes[run_real(argv, file, real_cpu)] += 1
        return outcome

    with tempfile.TemporaryDirectory(dir=_FAST_TMP) as tmp, boot_stubbed():
        if fmt == "cli":
            for _ in range(cases):
                argv = cli_case(r)
                _one(tally, lambda argv=argv: case(argv, None), stop_on_failure)
            return tally
        f = FILE_FORMATS[fmt]
        pool = f.seeds()
        path = os.path.join(tmp, "input" + f.suffix)
        for i in range(cases):
            data = pool[i % len(pool)] if i < len(pool) else mutate(r.choice(pool), r, pool)
            Path(path).write_bytes(data)
            if fmt == "snapshot":
                _one(tally, lambda: run_snapshot(path), stop_on_failure, data)
            else:
                _one(tally, lambda: case(f.argv(path), path), stop_on_failure, data)
    return tally


def _one(tally: Tally, case: Callable[[], str], stop: bool, data: bytes | None = None) -> None:
    try:
        tally.outcomes[case()] += 1
    except FuzzFailure as e:
        tally.outcomes["FAILURE"] += 1
        if data is not None:  # the input, to reproduce it
            e.args = (f"{e.args[0]}\n    input: {data[:1500]!r}",)
        if stop:
            raise
        if len(tally.failures) < 50:
            tally.failures.append(str(e)[:2000])
