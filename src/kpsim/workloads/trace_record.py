"""Recording a program's memory behaviour with ``perf`` (``kpsim record``).

Runs ``perf record`` on a command with the tracepoints issue 8 lists
(:data:`RECORD_EVENTS`), following its children through perf's default inherit
mode, with a large ring buffer; or, as perf's ``-p PID`` and ``-a`` do, on running
processes (until they exit or Ctrl-C) or on the whole system (for the command's
duration, or until Ctrl-C). It then converts the data with
``perf script -F comm,pid,tid,cpu,time,event,trace`` into the text trace that
:mod:`kpsim.workloads.trace` reads. Lost events are counted (``PERF_RECORD_LOST``
lines, which stay in the trace so that ``kpsim replay`` reports it incomplete, and
``perf report --stats``).

With ``vmpte=True`` the whole ``perf record`` run is also traced with ptrace
(``PTRACE_O_TRACEEXIT``): every task stops at the start of ``do_exit()``, before
``exit_mm()`` drops the mm, and ``/proc/TID/status`` still shows the final
``VmPTE`` (PTE + PMD + PUD tables) of its mm. The last such reading of each thread
group is the live kernel's page-table count at exit (``FILE.vmpte.json``). At the same
stop ``/proc/TID/stat`` gives the mm's argument area, ``arg_start`` to ``env_end``
(``FILE.args.json``): execve's ``copy_strings`` filled those stack pages through
``get_user_pages``, which no page-fault tracepoint sees, so the replay needs them to
build the same stack tables.

The command's exit status is passed on as ``perf record`` passes it on (perf exits
with its workload's status). Left out: perf's own ``--threads`` mode, VmPTE readings
with ``-p``/``-a`` (ptrace follows only perf's own children), and the x86-only nature
of the page-fault tracepoints (other hosts report them missing).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kpsim.errors import InputError

#: The tracepoints ``kpsim record`` enables (issue 8, item 1).
RECORD_EVENTS: tuple[str, ...] = (
    "sched:sched_process_fork",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
    *(
        f"syscalls:sys_{d}_{s}"
        for s in ("mmap", "munmap", "mremap", "brk")
        for d in ("enter", "exit")
    ),
    *(f"syscalls:sys_enter_{s}" for s in ("mprotect", "madvise", "clone", "clone3", "vfork")),
    "syscalls:sys_enter_exit_group",
    "exceptions:page_fault_user",
    "exceptions:page_fault_kernel",
)

SCRIPT_FIELDS = "comm,pid,tid,cpu,time,event,trace"
DEFAULT_BUFFER = "64M"  # per-CPU ring buffer; a compiler run writes about 5 MB/s of events

_LOST_LINE = re.compile(r"\sPERF_RECORD_LOST lost (\d+)\s*$")
_STATS_LOST = re.compile(r"^\s*LOST(_SAMPLES)? events:\s+(\d+)", re.MULTILINE)


class PerfUnavailable(InputError):
    """perf is missing, cannot see tracepoints, or is not permitted to record them."""


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one ``kpsim record`` run produced."""

    trace: Path
    lines: int
    exit_status: int  # the command's: exit code, or -N when killed by signal N
    lost_events: int  # events perf dropped (sum of PERF_RECORD_LOST counts)
    lost_chunks: int  # PERF_RECORD_LOST records
    lost_samples: int  # PERF_RECORD_LOST_SAMPLES records (perf report --stats)
    missing: tuple[str, ...]  # tracepoints this host lacks (recorded without them)
    vmpte: dict[int, int] | None = None  # thread-group id -> VmPTE pages at exit
    vmpte_file: Path | None = None
    perf_data: Path | None = None
    command: tuple[str, ...] = field(default=())
    #: thread-group id -> (arg_start, env_end) of its mm at exit (FILE.args.json)
    arg_areas: dict[int, tuple[int, int]] | None = None
    args_file: Path | None = None


# --- perf discovery -----------------------------------------------------------------


def find_perf() -> str:
    """The perf executable on PATH, or :class:`PerfUnavailable`."""
    perf = shutil.which("perf")
    if perf is None:
        raise PerfUnavailable("perf is not installed (no 'perf' on PATH)")
    return perf


def available_tracepoints(perf: str) -> set[str]:
    """The tracepoints perf can see (``perf list --raw-dump tracepoint``)."""
    try:
        out = subprocess.run(
            [perf, "list", "--raw-dump", "tracepoint"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PerfUnavailable(f"perf cannot be run: {err}") from None
    return set(out.stdout.split())


def check_permitted(perf: str) -> set[str]:
    """Fail with one line unless perf may record tracepoints here; returns them."""
    seen = available_tracepoints(perf)
    if os.geteuid() != 0:
        paranoid = _read_int("/proc/sys/kernel/perf_event_paranoid")
        if paranoid is not None and paranoid > -1:
            raise PerfUnavailable(
                f"perf is not permitted to record tracepoints: not root and "
                f"kernel.perf_event_paranoid is {paranoid} (needs -1 or CAP_PERFMON)"
            )
    if not seen:
        raise PerfUnavailable(
            "perf lists no tracepoints: not permitted to read tracefs, or tracefs not mounted "
            "(run as root; mount -t tracefs nodev /sys/kernel/tracing)"
        )
    return seen


def missing_tracepoints(seen: Iterable[str], wanted: Sequence[str] = RECORD_EVENTS) -> list[str]:
    """The tracepoints of ``wanted`` that this kernel does not offer."""
    have = set(seen)
    return [e for e in wanted if e not in have]


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


# --- recording ----------------------------------------------------------------------


def perf_record_argv(
    perf: str,
    data: Path,
    cmd: Sequence[str],
    events: Sequence[str],
    buffer: str,
    *,
    pids: str | None = None,
    system_wide: bool = False,
) -> list[str]:
    """The ``perf record`` command line: inherit (the default), a big buffer, and
    ``-p PIDS`` or ``-a`` when asked; the command (if any) last."""
    argv = [perf, "record", "-q", "--no-buildid", "-m", buffer, "-o", str(data)]
    if pids is not None:
        argv += ["-p", pids]
    if system_wide:
        argv.append("-a")
    for e in events:
        argv += ["-e", e]
    return [*argv, "--", *cmd] if cmd else argv


_PIDS = re.compile(r"^[1-9][0-9]*(,[1-9][0-9]*)*$")


def check_targets(cmd: Sequence[str], pids: str | None, system_wide: bool, vmpte: bool) -> None:
    """What to record: a command, ``-p PIDS`` (running processes) or ``-a`` (the
    system, with or without a command); ``InputError`` when that does not add up."""
    if pids is not None:
        if _PIDS.match(pids) is None:
            raise InputError(f"-p/--pid: expected PID[,PID...], got {pids!r}")
        if cmd or system_wide:
            raise InputError("-p/--pid records running processes: give no command and no -a")
        for pid in pids.split(","):
            if not Path(f"/proc/{pid}").is_dir():
                raise InputError(f"-p/--pid: no process {pid}")
    elif not cmd and not system_wide:
        raise InputError("no command to record (kpsim record -o FILE -- CMD [ARGS...])")
    if vmpte and (pids is not None or system_wide):
        raise InputError("--vmpte reads the command's own processes: not with -p or -a")


def record(
    cmd: Sequence[str],
    output: Path,
    *,
    buffer: str = DEFAULT_BUFFER,
    allow_missing: bool = False,
    vmpte: bool = False,
    keep_data: Path | None = None,
    pids: str | None = None,
    system_wide: bool = False,
) -> RecordResult:
    """Record ``cmd`` (or ``pids``, or the system) into the text trace ``output``."""
    check_targets(cmd, pids, system_wide, vmpte)
    perf = find_perf()
    missing = missing_tracepoints(check_permitted(perf))
    if missing and not allow_missing:
        raise PerfUnavailable(
            f"this kernel lacks tracepoint(s) {', '.join(missing)}; "
            "--allow-missing records without them (the replay will be incomplete)"
        )
    if cmd and shutil.which(cmd[0]) is None:
        raise InputError(f"command not found: {cmd[0]}")
    if not output.parent.is_dir():
        raise InputError(f"cannot write the trace: no directory {output.parent}")
    events = [e for e in RECORD_EVENTS if e not in missing]
    with tempfile.TemporaryDirectory(prefix="kpsim-record-") as tmp:
        data = keep_data if keep_data is not None else Path(tmp) / "perf.data"
        argv = perf_record_argv(perf, data, cmd, events, buffer, pids=pids, system_wide=system_wide)
        readings: dict[int, int] | None = None
        areas: dict[int, tuple[int, int]] = {}
        with _sigint_to_children():
            if vmpte:
                status, readings = run_reading_vmpte(argv, areas)
            else:
                status = subprocess.run(argv, check=False).returncode
        if not data.exists() or data.stat().st_size == 0:
            raise PerfUnavailable(
                f"perf record failed (status {status}) before writing data; "
                f"run it by hand to see why: {' '.join(argv)}"
            )
        lines, lost, chunks = convert(perf, data, output)
        lost_samples = _lost_samples(perf, data)
    vm_file = args_file = None
    if readings is not None:
        vm_file = output.with_name(output.name + ".vmpte.json")
        vm_file.write_text(json.dumps({str(k): v for k, v in sorted(readings.items())}) + "\n")
        args_file = output.with_name(output.name + ".args.json")
        doc = {str(k): list(v) for k, v in sorted(areas.items())}
        args_file.write_text(json.dumps(doc) + "\n")
    return RecordResult(
        output, lines, status, lost, chunks, lost_samples, tuple(missing),
        readings, vm_file, keep_data, tuple(cmd), areas if readings is not None else None,
        args_file,
    )  # fmt: skip


# --- the sidecars' readers (kpsim replay, the tests, benchmarks/bench_bigtrace.py) ------


def _read_sidecar(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read {what}: {err.strerror}", file=str(path)) from None
    except ValueError as err:
        raise InputError(f"not JSON: {err}", file=str(path)) from None


def read_vmpte(path: Path) -> dict[int, int]:
    """``FILE.vmpte.json``: ``{"pid": pages}`` (``InputError`` naming it otherwise)."""
    raw = _read_sidecar(path, "VmPTE file")
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, int) for k, v in raw.items()
    ):
        raise InputError('expected {"pid": pages, ...}', file=str(path))
    return {int(k): v for k, v in raw.items()}


def read_arg_areas(path: Path) -> dict[int, tuple[int, int]]:
    """``FILE.args.json``: ``{"pid": [arg_start, env_end]}`` (``InputError`` otherwise)."""
    raw = _read_sidecar(path, "the argument areas")
    ok = isinstance(raw, dict) and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, list) and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and 0 < v[0] < v[1]
        for k, v in raw.items()
    )  # fmt: skip
    if not ok or not isinstance(raw, dict):
        raise InputError('expected {"pid": [arg_start, env_end], ...}', file=str(path))
    return {int(k): (v[0], v[1]) for k, v in raw.items()}


@contextmanager
def _sigint_to_children() -> Iterator[None]:
    """Let Ctrl-C reach perf and the command (perf then writes its data), not kpsim.

    A Python handler, unlike SIG_IGN, is reset to the default by exec, so the
    recorded command can still be interrupted.
    """
    try:
        old = signal.signal(signal.SIGINT, lambda signum, frame: None)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def convert(perf: str, data: Path, output: Path) -> tuple[int, int, int]:
    """``perf script`` into ``output``; returns (lines, lost events, lost chunks)."""
    argv = [perf, "script", "-i", str(data), "-F", SCRIPT_FIELDS, "--show-lost-events"]
    lines = lost = chunks = 0
    with (
        output.open("w", encoding="utf-8") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as err,
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, text=True, errors="replace"
        ) as proc,
    ):
        assert proc.stdout is not None
        for text in proc.stdout:
            m = _LOST_LINE.search(text)
            if m is not None:  # kept: the replay reports where the trace is incomplete
                lost += int(m.group(1))
                chunks += 1
            out.write(text)
            lines += 1
        status = proc.wait()
        if status != 0:
            err.seek(0)
            why = [t for t in err.read().splitlines() if "not valid for" not in t]
            raise PerfUnavailable(f"perf script failed: {why[-1] if why else status}")
    return lines, lost, chunks


def _lost_samples(perf: str, data: Path) -> int:
    """PERF_RECORD_LOST_SAMPLES count from ``perf report --stats`` (0 if unreadable)."""
    out = subprocess.run(
        [perf, "report", "-i", str(data), "--stats"],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    ).stdout
    for m in _STATS_LOST.finditer(out):
        if m.group(1):  # the first LOST_SAMPLES line is the aggregate
            return int(m.group(2))
    return 0


# --- VmPTE at exit through ptrace -----------------------------------------------------

_PTRACE_TRACEME, _PTRACE_CONT = 0, 7
_PTRACE_SETOPTIONS, _PTRACE_GETEVENTMSG, _PTRACE_GETSIGINFO = 0x4200, 0x4201, 0x4202
_O_TRACEFORK, _O_TRACEVFORK, _O_TRACECLONE, _O_TRACEEXEC, _O_TRACEEXIT = 2, 4, 8, 16, 64
_EV_VFORK, _EV_EXEC, _EV_EXIT = 2, 4, 6
_WALL = 0x4000_0000
_VMPTE = re.compile(r"^VmPTE:\s+(\d+) kB", re.MULTILINE)
_TGID = re.compile(r"^Tgid:\s+(\d+)", re.MULTILINE)


class _Ptrace:
    """The four ptrace requests the exit reader needs, through libc."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._call = libc.ptrace
        self._call.restype = ctypes.c_long
        self._call.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def __call__(self, req: int, pid: int, addr: int = 0, data: int | ctypes.c_void_p = 0) -> int:
        return int(self._call(req, pid, ctypes.c_void_p(addr), data))

    def cont(self, pid: int, sig: int = 0) -> None:
        self(_PTRACE_CONT, pid, 0, sig)

    def event_msg(self, pid: int) -> int:
        msg = ctypes.c_ulong(0)
        self(_PTRACE_GETEVENTMSG, pid, 0, ctypes.cast(ctypes.byref(msg), ctypes.c_void_p))
        return msg.value

    def is_group_stop(self, pid: int) -> bool:
        info = ctypes.create_string_buffer(128)
        return self(_PTRACE_GETSIGINFO, pid, 0, ctypes.cast(info, ctypes.c_void_p)) != 0


def _read_exit_vmpte(tid: int) -> tuple[int, int] | None:
    """(thread-group id, VmPTE pages) of a task stopped at exit, or None."""
    try:
        text = Path(f"/proc/{tid}/status").read_text()
    except OSError:
        return None
    vm, tg = _VMPTE.search(text), _TGID.search(text)
    if vm is None or tg is None:
        return None
    return int(tg.group(1)), int(vm.group(1)) * 1024 // os.sysconf("SC_PAGE_SIZE")


def _read_arg_area(tid: int) -> tuple[int, int] | None:
    """``(arg_start, env_end)`` of a stopped task's mm (``/proc/TID/stat`` fields 48 and
    51, since Linux 3.5): where execve's ``copy_strings`` put the argument and
    environment strings, pages the kernel filled through ``get_user_pages`` (no page
    fault is traced for them). None when unreadable or zero (a kernel thread)."""
    try:
        text = Path(f"/proc/{tid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # from field 3 (state) on: comm may hold ")"
    if len(fields) < 49:
        return None
    arg_start, env_end = int(fields[48 - 3]), int(fields[51 - 3])
    return (arg_start, env_end) if 0 < arg_start < env_end else None


def _spawn_traced(argv: Sequence[str]) -> int:
    """Fork a child that stops for its tracer, then execs ``argv``."""
    pt = _Ptrace()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            if pt(_PTRACE_TRACEME, 0) == 0:
                os.kill(os.getpid(), signal.SIGSTOP)
                os.execvp(argv[0], list(argv))
        finally:
            os._exit(127)
    return pid


def run_reading_vmpte(
    argv: Sequence[str], areas: dict[int, tuple[int, int]] | None = None
) -> tuple[int, dict[int, int]]:
    """Run ``argv`` (perf record) and its descendants under ptrace.

    Returns perf's exit status (``subprocess`` convention) and, per thread group
    other than perf's own, the VmPTE pages read at its last task's exit stop; fills
    ``areas`` (when given) with each such group's argument area at that stop
    (:func:`_read_arg_area`). Children created by vfork that exit without exec are
    left out: their mm is their parent's.
    """
    pt = _Ptrace()
    root = _spawn_traced(argv)
    os.waitpid(root, _WALL)
    opts = _O_TRACEFORK | _O_TRACEVFORK | _O_TRACECLONE | _O_TRACEEXEC | _O_TRACEEXIT
    pt(_PTRACE_SETOPTIONS, root, 0, opts)
    pt.cont(root)
    seen, vforked, readings = {root}, set[int](), dict[int, int]()
    st = 0
    while True:
        try:
            w, st = os.waitpid(-1, _WALL)
        except ChildProcessError:  # pragma: no cover - perf was reaped elsewhere
            break
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            if w == root:
                break
            continue
        if not os.WIFSTOPPED(st):
            continue
        sig, event = os.WSTOPSIG(st), st >> 16
        if w not in seen:  # a new tracee's initial SIGSTOP
            seen.add(w)
            pt.cont(w, 0 if sig == signal.SIGSTOP else sig)
            continue
        if sig == signal.SIGTRAP and event:
            _on_ptrace_event(pt, w, event, vforked, readings, areas)
            pt.cont(w)
        else:
            pt.cont(w, 0 if pt.is_group_stop(w) else sig)
    readings.pop(root, None)
    if areas is not None:
        areas.pop(root, None)
        for gone in set(areas) - set(readings):
            del areas[gone]
    return os.waitstatus_to_exitcode(st), readings


def _on_ptrace_event(
    pt: _Ptrace,
    tid: int,
    event: int,
    vforked: set[int],
    readings: dict[int, int],
    areas: dict[int, tuple[int, int]] | None = None,
) -> None:
    if event == _EV_EXIT:
        got = _read_exit_vmpte(tid)
        if got is not None and got[0] not in vforked:
            readings[got[0]] = got[1]
            area = _read_arg_area(tid) if areas is not None else None
            if area is not None and areas is not None:
                areas[got[0]] = area
    elif event == _EV_VFORK:
        vforked.add(pt.event_msg(tid))
    elif event == _EV_EXEC:
        vforked.discard(tid)
