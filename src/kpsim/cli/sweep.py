"""``kpsim sweep GRID.toml``: many scenarios, results in a DuckDB database (issue 15).

Parsing and printing only: the grid format is :mod:`kpsim.engine.grid`, the runs
:mod:`kpsim.engine.sweep`, the database :mod:`kpsim.engine.results`. Every run of the
grid is checked before the first one starts (a malformed grid: one line
``FILE:LINE: problem``, exit status 2). Runs the database already holds are skipped,
so a sweep stopped halfway (Ctrl-C, a killed job) finishes when started again. A
progress bar on a terminal; ``--json`` prints the summary as one document. Exit status
1 if a run found something (a failed KUnit case, an audit violation, an attack that
landed), 2 if a run was refused (its error is stored in the ``runs`` table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kpsim.cli.arch_opts import add_arch_option
from kpsim.cli.common import add_json, console, emit_json, int_arg
from kpsim.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sweep",
        help="run a grid of scenarios (locally or on Dask); results in a DuckDB database",
        description=(
            "Run every scenario of a grid (docs/sweep.md) with the main job's engine, on "
            "a local process pool or a Dask cluster; results go into a DuckDB database "
            "(runs already in it are skipped), exportable as Parquet and CSV."
        ),
    )
    p.add_argument("grid", metavar="GRID.toml", help="the grid file")
    p.add_argument(
        "-o", "--db", metavar="FILE", help="results database (default: GRID with .duckdb)"
    )
    p.add_argument("--jobs", type=int_arg, metavar="N", help="local workers (default: CPUs)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on this Dask scheduler instead")
    p.add_argument("--parquet", metavar="FILE", help="then export the results as Parquet")
    p.add_argument("--csv", metavar="FILE", help="then export the results as CSV")
    add_arch_option(p, scenario=True)
    add_json(p)
    p.set_defaults(func=run)


class _Bar:
    """A rich progress bar over the runs on a terminal; nothing when piped."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar: Any = None
        if not enabled or not total:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = self.bar.add_task("sweep", total=total)

    def __call__(self, done: int, total: int, run_id: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def __enter__(self) -> _Bar:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def run(args: argparse.Namespace) -> int:
    from kpsim.engine.grid import load_grid
    from kpsim.engine.results import Results
    from kpsim.engine.sweep import remaining, sweep

    grid = load_grid(args.grid, args.arch)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs: must be at least 1, got {args.jobs}")
    db = args.db or str(Path(args.grid).with_suffix(".duckdb"))
    with Results(db) as results:
        results.grid_columns(grid.keys)
        todo = len(list(remaining(grid, results)))
        tty = sys.stdout.isatty() and not args.json
        try:
            with _Bar(tty, todo) as bar:
                summary = sweep(grid, results, jobs=args.jobs, dask=args.dask, on_result=bar)
        except KeyboardInterrupt:
            kept = len(results.done())
            sys.stderr.write(
                f"kpsim sweep: interrupted; {kept} finished runs are in {db}, "
                "run the same command again to finish\n"
            )
            raise SystemExit(130) from None
        exports = _export(results, args)
    doc = {"grid": args.grid, "database": db, **summary.as_json(), "exports": exports}
    if args.json:
        emit_json(doc)
    else:
        _print(doc)
    if summary.failed:
        return 2
    return 1 if summary.found else 0


def _export(results: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for fmt in ("parquet", "csv"):
        path = getattr(args, fmt)
        if path:
            try:
                rows = results.export(path, fmt)
            except Exception as err:  # duckdb's IOException: an unwritable path
                raise InputError(f"--{fmt}: cannot write: {err}", file=path) from None
            out.append({"format": fmt, "path": path, "rows": rows})
    return out


def _print(doc: dict[str, Any]) -> None:
    c = console()
    c.print(
        f"kpsim sweep  {doc['grid']}: {doc['runs']} runs, {doc['skipped']} already in "
        f"{doc['database']}, {doc['ran']} run now"
        + (f", {doc['failed']} refused (the runs table says why)" if doc["failed"] else "")
        + (f", {doc['found']} found something (status 1)" if doc["found"] else "")
    )
    for e in doc["exports"]:
        c.print(f"exported     {e['rows']} rows ({e['format']}) to {e['path']}")
    c.print(
        "`kpsim report " + doc["database"] + " -o report.html` plots them; the `results` "
        "view has one row per run and counter",
        style="dim",
    )
