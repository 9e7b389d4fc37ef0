"""``kpsim snapshot PID``: a live process's maps and mapped pages; ``--check`` bounds.

``kpsim snapshot PID -o FILE`` writes the snapshot (maps and present ranges) as
JSON for later replay; ``kpsim snapshot --check PID`` compares the live ``VmPTE``
with the model's count for the same present pages and with the bounds of
``pt-lifecycle.md`` §4. Exit status 1 when ``VmPTE`` falls outside the bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kpsim.cli.common import add_json, check_writable, emit_json, int_arg
from kpsim.cli.host_verbs import EXIT_FOUND, EXIT_OK, fail
from kpsim.errors import InputError
from kpsim.workloads.host import HostError, HostUnavailable, check_host
from kpsim.workloads.snapshot import (
    Snapshot,
    check_snapshot,
    pt_bounds,
    snapshot_to_json,
    take_snapshot,
)
from kpsim.workloads.steps import load_simtarget


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "snapshot",
        help="read a live process's maps and present pages; --check its table count",
        description="Read PID's /proc maps, smaps and present pages (PAGEMAP_SCAN, else "
        "/proc/PID/pagemap; the target is stopped with SIGSTOP meanwhile unless it is "
        "blocked in a syscall). With --check, compare its VmPTE (in "
        "4K table pages) with the table count the model derives from the same mappings, "
        "and with the lower and upper bounds of the page-table lifetime rules.",
    )
    p.add_argument("pid", type=int_arg, metavar="PID", help="process to read")
    p.add_argument("-o", "--output", metavar="FILE", help="write the snapshot as JSON to FILE")
    p.add_argument(
        "--check",
        action="store_true",
        help="compare VmPTE with the model's count and the bounds of pt-lifecycle.md §4",
    )
    p.add_argument(
        "--no-stop",
        action="store_true",
        help="never SIGSTOP the target; require it to be blocked already",
    )
    add_json(p)
    p.set_defaults(func=run)


def _fail(line: str) -> int:
    return fail("snapshot", line)


def run(args: argparse.Namespace) -> int:
    if args.output:
        check_writable(args.output, "snapshot")  # before the target is stopped
    try:
        check_host()
        snap = take_snapshot(args.pid, may_stop=not args.no_stop)
    except (HostUnavailable, HostError) as err:
        return _fail(str(err))
    if args.output:
        _write(snap, args.output)
    if args.check:
        return _check(snap, args.json)
    if args.json:
        emit_json(snapshot_to_json(snap))
    elif not args.output:
        _summary(snap)
    return EXIT_OK


def _write(snap: Snapshot, path: str) -> None:
    try:
        Path(path).write_text(json.dumps(snapshot_to_json(snap), indent=1) + "\n")
    except OSError as err:
        raise InputError(f"cannot write snapshot: {err.strerror}", file=path) from None
    sys.stderr.write(f"kpsim snapshot: wrote {path}\n")


def _summary(snap: Snapshot) -> None:
    b = pt_bounds(snap.vmas, snap.present)
    pages = sum(e - s for s, e in snap.present) >> 12
    print(
        f"pid {snap.pid}: {len(snap.vmas)} VMAs, {pages} mapped pages in {len(snap.present)} ranges"
    )
    print(f"VmPTE {snap.vmpte_pages} pages; bounds {b.lower}..{b.upper}")
    print(f"  lower (pte, pmd, pud) = {b.lower_levels}; upper = {b.upper_levels}")
    print(f"  read with {snap.method}, target {snap.quiescence}")


def _check(snap: Snapshot, as_json: bool) -> int:
    module, why = load_simtarget()
    check = check_snapshot(snap, module)
    if not check.model_available:
        sys.stderr.write(f"kpsim snapshot: model side not available ({why}); model = lower bound\n")
    if as_json:
        emit_json(check.to_json())
    else:
        verdict = "exact" if check.exact else "not exact"
        print(
            f"pid {check.pid}: VmPTE {check.vmpte_pages} pages, model {check.model_pt_pages} "
            f"({verdict}); bounds {check.bounds.lower}..{check.bounds.upper}"
        )
        if not check.within_bounds:
            print("VmPTE is outside the bounds: pt-lifecycle.md rule 10 does not hold here")
    return EXIT_OK if check.within_bounds else EXIT_FOUND
