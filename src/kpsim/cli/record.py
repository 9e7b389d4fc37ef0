"""``kpsim record -o FILE -- CMD [ARGS...]``: record a program's memory behaviour.

As ``perf record``: ``-p PID`` records running processes, ``-a`` the whole system;
the summary goes to stderr (stdout is the command's, or ``--json``'s); the exit
status is the command's (128+N if a signal N killed it), so ``kpsim record -- make``
fails when make does. Lost events are a warning, as perf's. Also ``kpsim record
--check FILE``: parse an existing trace and summarise it. Exit status 2: bad usage,
bad trace, or perf missing or not permitted.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpsim.cli.common import add_json, check_writable, emit_json, plural
from kpsim.errors import InputError

if TYPE_CHECKING:
    from kpsim.workloads.trace_record import RecordResult

DESCRIPTION = """\
Run CMD under perf record (fork, exec and exit; mmap, munmap, mremap, brk, mprotect,
madvise, clone, clone3, vfork, exit_group; user and kernel page faults; children
followed) and write the perf script text trace to FILE. As with perf record, -p PID
records running processes (until they exit, or Ctrl-C) and -a the whole system (for
CMD's run, or until Ctrl-C); the summary goes to stderr."""

EPILOG = """\
exit status: the command's, as perf record's (128+N when signal N killed it; 0 with
-p, or -a without a command); lost events are a warning on stderr (the trace is
incomplete); 2 bad usage, unreadable trace, perf missing or not permitted.

examples:
  kpsim record -o ls.trace -- ls -l /
  kpsim record --vmpte -o build.trace -- make -j2
  kpsim record -p 1234 -o daemon.trace       # until it exits or Ctrl-C
  kpsim record -a -o system.trace -- sleep 5
  kpsim record --check ls.trace
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "record",
        help="record a command's memory behaviour with perf into a text trace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="the text trace to write")
    p.add_argument("--check", type=Path, metavar="FILE", help="parse FILE and summarise it")
    p.add_argument(
        "-p", "--pid", metavar="PID[,PID...]", help="record running processes, as perf's -p"
    )
    p.add_argument(
        "-a",
        "--all-cpus",
        dest="system_wide",
        action="store_true",
        help="record the whole system, as perf's -a",
    )
    p.add_argument(
        "-m",
        "--buffer",
        default="64M",
        metavar="SIZE",
        help="perf ring buffer per CPU: a size or a page count, as perf's -m (default 64M)",
    )
    p.add_argument(
        "--vmpte",
        action="store_true",
        help="also read each process's VmPTE at exit (ptrace) into FILE.vmpte.json, and "
        "its argument area (arg_start..env_end) into FILE.args.json",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="record even if this kernel lacks some of the tracepoints",
    )
    p.add_argument("--keep-data", type=Path, metavar="PATH", help="keep perf.data at PATH")
    add_json(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.check is not None:
        if cmd or args.output is not None or args.pid or args.system_wide:
            raise InputError("--check FILE takes no -o, -p, -a and no command")
        return _check(args.check, args.json)
    if args.output is None or not (cmd or args.pid or args.system_wide):
        raise InputError("usage: kpsim record -o FILE [-p PID | -a] [-- CMD [ARGS...]]")
    from kpsim.workloads.trace_record import check_targets

    check_targets(cmd, args.pid, args.system_wide, args.vmpte)
    if _BUFFER.match(args.buffer) is None:
        raise InputError(
            f"-m/--buffer: expected a size such as 64M or a number of pages, got {args.buffer!r}"
        )
    check_writable(args.output, "the trace")
    if args.keep_data is not None:
        check_writable(args.keep_data, "--keep-data")
    from kpsim.workloads.trace_record import record

    res = record(
        cmd,
        args.output,
        buffer=args.buffer,
        allow_missing=args.allow_missing,
        vmpte=args.vmpte,
        keep_data=args.keep_data,
        pids=args.pid,
        system_wide=args.system_wide,
    )
    summary = _summary(res.trace)
    if args.json:
        emit_json(_record_doc(res, summary))
    _print_record(res, summary, args.pid, args.system_wide)
    return exit_status(res.exit_status)


def exit_status(status: int) -> int:
    """The shell's status for a command's: the code, or 128+N when killed by signal N."""
    return 128 - status if status < 0 else status


#: What ``perf record -m`` takes: a page count or a size (B, K, M or G), not zero.
_BUFFER = re.compile(r"^[1-9][0-9]*[BKMG]?$", re.IGNORECASE)


def _record_doc(res: RecordResult, summary: dict[str, Any]) -> dict[str, Any]:
    def path(p: Path | None) -> str | None:
        return None if p is None else str(p)

    return {
        "trace": str(res.trace),
        "command": list(res.command),
        "exit_status": res.exit_status,
        "lines": res.lines,
        "lost_events": res.lost_events,
        "lost_chunks": res.lost_chunks,
        "lost_samples": res.lost_samples,
        "missing": list(res.missing),
        "vmpte_file": path(res.vmpte_file),
        "vmpte": None if res.vmpte is None else {str(k): v for k, v in res.vmpte.items()},
        "args_file": path(res.args_file),
        "perf_data": path(res.perf_data),
        "summary": summary,
    }


def _status_text(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _print_record(
    res: RecordResult, summary: dict[str, Any], pids: str | None, system_wide: bool
) -> None:
    """The summary, on stderr as perf record's (stdout is the command's)."""

    def say(text: str) -> None:
        sys.stderr.write(text + "\n")

    cmd = " ".join(res.command)
    procs = plural(len(summary["processes"]), "process")
    say(f"kpsim record: {res.trace}: {res.lines} lines, {procs}")
    if pids is not None:
        say(f"  processes {pids} recorded (perf {_status_text(res.exit_status)})")
    elif system_wide and not cmd:
        say(f"  whole system recorded (perf {_status_text(res.exit_status)})")
    else:
        where = "the whole system during " if system_wide else ""
        say(f"  {where}command {cmd!r} {_status_text(res.exit_status)}")
    if res.missing:
        say(f"  WARNING: recorded without missing tracepoints: {', '.join(res.missing)}")
    if res.lost_events or res.lost_samples:
        say(
            f"  WARNING: perf lost {res.lost_events} events in {res.lost_chunks} chunks "
            f"({res.lost_samples} lost-sample records): the trace is incomplete; "
            "rerun with a larger --buffer"
        )
    else:
        say("  no events lost")
    if res.vmpte_file is not None and res.vmpte is not None:
        say(f"  VmPTE at exit of {plural(len(res.vmpte), 'process')}: {res.vmpte_file}")
    if res.args_file is not None and res.arg_areas is not None:
        say(f"  argument areas of {plural(len(res.arg_areas), 'process')}: {res.args_file}")
    if res.perf_data is not None:
        say(f"  perf data kept at {res.perf_data}")


def _summary(path: Path) -> dict[str, Any]:
    from kpsim.workloads.trace import read_trace, summarize

    s = summarize(read_trace(path), file=str(path))
    return {
        "records": s.records,
        "ops": s.ops,
        "processes": {str(k): v for k, v in sorted(s.processes.items())},
        "skipped": s.skipped,
    }


def _check(path: Path, as_json: bool) -> int:
    summary = _summary(path)
    if as_json:
        emit_json({"trace": str(path), **summary})
        return 0
    n = sum(summary["records"].values())
    print(
        f"kpsim record --check: {path}: {n} records, {plural(len(summary['processes']), 'process')}"
    )
    for title in ("records", "ops", "skipped"):
        items = sorted(summary[title].items(), key=lambda kv: (-kv[1], kv[0]))
        if items:
            print(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in items))
    return 0
