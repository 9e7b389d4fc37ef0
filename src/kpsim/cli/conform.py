"""``kpsim conform --steps FILE``: the same steps on the host kernel and on the model.

Prints, per step, both sides' page-table pages (``VmPTE/4``) and deltas and whether
the deltas agree; exit status 1 on any mismatch, 2 on a bad steps file or when a
side that was asked for cannot run. The model takes the host's THP mode and
CONFIG_PT_RECLAIM (``--thp``, ``--pt-reclaim``) and, unless ``--fresh-model``, starts
from a snapshot of the host child's address space taken before step 1. ``--arch``
picks the model's machine (arm64, the default, or x86: on an x86-64 host the like for
like comparison).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kpsim.cli.arch_opts import add_arch_option
from kpsim.cli.common import add_json, console, emit_json
from kpsim.cli.host_verbs import EXIT_FOUND, EXIT_OK, fail
from kpsim.workloads.host import (
    HostError,
    HostTarget,
    HostUnavailable,
    kernel_option,
    thp_mode,
    thp_use_zero_page,
)
from kpsim.workloads.snapshot import take_snapshot
from kpsim.workloads.steps import (
    ConformRow,
    StepResult,
    StepsFile,
    StepTarget,
    compare_results,
    conform_document,
    load_simtarget,
    load_steps,
    run_steps,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "conform",
        help="run a steps file on the host kernel and on the model; compare table counts",
        description="Run each [[step]] of FILE (mmap, touch, munmap, mprotect, madvise, "
        "mremap, fork, brk...) in a child process of this host and in the model (started "
        "from a copy of the child's address space), and compare the change of page-table "
        "pages (VmPTE / 4K) step by step. Exit status 1 on a mismatch. Examples: "
        "examples/steps/.",
    )
    p.add_argument("--steps", required=True, metavar="FILE", help="TOML steps file")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--sim-only", action="store_true", help="run the model alone")
    side.add_argument("--host-only", action="store_true", help="run the host kernel alone")
    p.add_argument(
        "--thp",
        choices=("host", "always", "madvise", "never"),
        default="host",
        help="THP mode for the model (default: the host's)",
    )
    p.add_argument(
        "--pt-reclaim",
        choices=("host", "on", "off"),
        default="host",
        help="CONFIG_PT_RECLAIM for the model (default: the host's, else on)",
    )
    p.add_argument(
        "--memory",
        default="16G",
        metavar="SIZE",
        help="the model machine's memory (default 16G; only written pages use it)",
    )
    p.add_argument(
        "--fresh-model",
        action="store_true",
        help="start the model from an empty process, not from a copy of the host "
        "child's address space (kernel-placed mappings then land elsewhere)",
    )
    add_arch_option(p)
    add_json(p)
    p.set_defaults(func=run)


def _fail(line: str) -> int:
    return fail("conform", line)


def run(args: argparse.Namespace) -> int:
    steps = load_steps(args.steps)
    notes: list[str] = []
    sim_module = None
    if not args.host_only:
        sim_module, why = load_simtarget()
        if sim_module is None:
            if args.sim_only:
                return _fail(f"the model side is not available: {why}")
            notes.append(f"model side not available ({why}): sim fields are null")
    _host_defaults(args)
    try:
        host = None if args.sim_only else _run_host(steps, notes, args)
        if sim_module is None and host is None:
            return _fail("neither the model nor the host side can run")
        sim = None
        if sim_module is not None:
            sim = _run(steps, sim_module.make_sim_target(args), "model")
    except (HostError, HostUnavailable) as err:
        return _fail(str(err))
    rows = compare_results(steps, sim, host)
    doc = conform_document(rows)
    if args.json:
        emit_json(doc)
    else:
        _print_rows(rows, notes)
    for note in notes if args.json else ():
        sys.stderr.write(f"kpsim conform: {note}\n")
    return EXIT_FOUND if doc["mismatches"] else EXIT_OK


def _host_defaults(args: argparse.Namespace) -> None:
    """The model follows the host where pt-lifecycle.md says behaviour depends on it:
    the THP mode (and its huge zero page) and CONFIG_PT_RECLAIM."""
    if args.thp == "host":
        args.thp = thp_mode() or "madvise"
        args.thp_use_zero_page = thp_use_zero_page()
    if args.pt_reclaim == "host":
        args.pt_reclaim = kernel_option("PT_RECLAIM") != "n"  # unknown: on, as mainline
    else:
        args.pt_reclaim = args.pt_reclaim == "on"


def _run_host(
    steps: StepsFile, notes: list[str], args: argparse.Namespace
) -> list[StepResult] | None:
    """Run the steps on the host; unless ``--fresh-model``, first snapshot the host
    child (``args.seed``) so that the model starts from the same address space."""
    try:
        target = HostTarget()
    except HostUnavailable as err:
        if args.host_only:
            raise
        notes.append(f"host side not available ({err}): host fields are null")
        return None
    if not args.fresh_model and not args.host_only:
        try:
            args.seed = take_snapshot(target.pid)
        except BaseException:
            target.close()
            raise
    d = target.description
    reclaim = d["pt_reclaim"] or "?"
    notes.insert(
        0, f"host: Linux {d['kernel']} {d['machine']}, THP {d['thp']}, PT_RECLAIM {reclaim}"
    )
    return _run(steps, target, "host")


def _run(steps: StepsFile, target: StepTarget, label: str) -> list[StepResult]:
    """Run all steps on one target, with a progress bar on a terminal."""
    try:
        if not sys.stderr.isatty():
            return run_steps(steps, target)
        with Progress(transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task(f"{label} steps", total=len(steps.steps))

            def advance(_result: StepResult) -> None:
                bar.advance(task)

            return run_steps(steps, target, on_step=advance)
    finally:
        target.close()


def _cell(value: int | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+d}" if signed else str(value)


def _child(side: StepResult | None) -> str:
    if side is None or side.child_pt_pages is None:
        return "-"
    return f"{side.child_pt_pages} ({_cell(side.child_delta, signed=True)})"


def _columns(row: ConformRow, forks: bool) -> list[str]:
    sim, host, match = row.sim, row.host, row.match
    cells = [
        str(row.index),
        row.op,
        _cell(None if sim is None else sim.pt_pages),
        _cell(None if sim is None else sim.delta, signed=True),
        _cell(None if host is None else host.pt_pages),
        _cell(None if host is None else host.delta, signed=True),
        "-" if match is None else ("yes" if match else "NO"),
    ]
    return [*cells, _child(sim), _child(host)] if forks else cells


_HEAD = ("step", "op", "sim_pt_pages", "sim_delta", "host_pt_pages", "host_delta", "match")
_CHILD_HEAD = ("child_sim", "child_host")
_SHORT = ("step", "op", "sim", "sim Δ", "host", "host Δ", "match", "child sim", "child host")


def _print_rows(rows: Sequence[ConformRow], notes: list[str]) -> None:
    out = console()
    for note in notes:
        out.print(note, markup=False)
    forks = any(r.op == "fork" for r in rows)
    head = [*_HEAD, *_CHILD_HEAD] if forks else list(_HEAD)
    body = [_columns(r, forks) for r in rows]
    if out.is_terminal:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, name in enumerate(_SHORT[: len(head)]):
            table.add_column(name, justify="left" if i == 1 else "right", no_wrap=True)
        for cells in body:
            table.add_row(*cells)
        out.print(table)
    else:
        widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
        for line in (head, *body):
            cells = [
                c.ljust(w) if i == 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            print("  ".join(cells).rstrip())
    if forks:
        print("child: the forked child's pages (its change over a child forked before step 1)")
    mismatches = sum(1 for r in rows if r.match is False)
    compared = sum(1 for r in rows if r.match is not None)
    if compared and mismatches:
        print(f"{mismatches} of {compared} steps disagree")
    elif compared:
        print(f"all {compared} steps agree")
