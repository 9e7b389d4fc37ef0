"""``kpsim compare``: arm64 POE against x86 PKS on the series' benchmarks, side by side
(issue 18, item 5). Argument parsing and printing only: the runs, the event groups and
the estimates are :func:`kpsim.engine.compare.compare`'s."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kpsim.cli.common import add_json, emit_json, int_arg
from kpsim.errors import InputError
from kpsim.machine.config import ALLOCATORS
from kpsim.report.published import TABLE_NAMES
from kpsim.units import SZ_1G, parse_size

EPILOG = """\
x86 figures are prior-only: nothing on x86 is fitted (no x86 kpkeys measurement
exists), so their range is the overhead with the x86 hardware priors and, apart, the
software priors each divided and multiplied by 3. arm64 is shown both ways: with the
shipped calibration (fitted on the arm64 v5-corrected table, its held-out interval)
and with the priors alone, like x86.

examples:
  kpsim compare                          fork, munmap, vmalloc and vm_map_ram rows
  kpsim compare --rows fork --json       one group, as JSON
  kpsim compare --size 1G --loops 200    the benchmarks' own sizes (slower)
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "compare",
        help="arm64 POE vs x86 PKS: counted events and estimated overhead per benchmark",
        description="Run each benchmark row (kpsim's workload for it) on arm64 and on "
        "x86, feature off and on, and print per row the counted events that differ "
        "between the architectures (pkey register writes, table allocations, splits, "
        "TLB invalidations and shootdowns) and the estimated overhead with its range.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", default=None, metavar="ROWS", help="rows (default: fork,munmap,"
                   "vmalloc,vm_map_ram; groups, tests or keys as for kpsim reproduce)")  # fmt: skip
    p.add_argument("--table", default="v5-corrected", choices=TABLE_NAMES,
                   help="the table naming the benchmarks (default v5-corrected)")  # fmt: skip
    p.add_argument("--size", default="64M", metavar="SIZE",
                   help="micromm mapping size (default 64M; the benchmark's is 1G)")  # fmt: skip
    p.add_argument("--loops", type=int_arg, default=50, metavar="N",
                   help="test_vmalloc loop count (default 50; the benchmark's is 200)")  # fmt: skip
    p.add_argument("--cpus", type=int_arg, default=2, metavar="N", help="CPUs (default 2)")
    p.add_argument("--seed", type=int_arg, default=0, metavar="N", help="seed (default 0)")
    p.add_argument("--no-batching", action="store_true", help="without lazy-MMU batching")
    p.add_argument("--allocator", choices=ALLOCATORS, default=None,
                   help="the same kpkeys table allocator on both (default: each "
                   "architecture's: arm64 minimal on its PTE-mapped linear map, x86 pba on "
                   "its block-mapped direct map)")  # fmt: skip
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.engine.compare import DEFAULT_ROWS, compare, machine_runner

    size = parse_size(args.size, what="--size")
    if size < 2 << 20 or size % (2 << 20) or size > 4 * SZ_1G:
        raise InputError(f"--size: must be a multiple of 2M between 2M and 4G, got {args.size}")
    if args.loops < 1:
        raise InputError(f"--loops: must be at least 1, got {args.loops}")
    progress = None
    if sys.stderr.isatty() and not args.json:

        def progress(label: str) -> None:
            sys.stderr.write(f"\r\x1b[K{label}")

    runner = machine_runner(
        cpus=args.cpus,
        seed=args.seed,
        batching=not args.no_batching,
        allocator=args.allocator,
        scale={"size": size, "loops": args.loops},
        progress=progress,
    )
    doc = compare(
        args.rows or DEFAULT_ROWS,
        table=args.table,
        batching=not args.no_batching,
        allocator=args.allocator,
        runner=runner,
    )
    if progress is not None:
        sys.stderr.write("\r\x1b[K")
    doc["scale"] = {"size": size, "loops": args.loops, "cpus": args.cpus, "seed": args.seed}
    if args.json:
        emit_json(doc)
    else:
        sys.stdout.write(text(doc))
    return 0


def _events(doc: dict[str, Any]) -> list[list[str]]:
    """One line per event group: the group, then each architecture's off -> on (+added)."""
    names: list[str] = []
    by: dict[str, dict[str, dict[str, Any]]] = {"arm64": {}, "x86": {}}
    for arch in by:
        for g in doc[arch]["events"]:
            by[arch][g["group"]] = g
            if g["group"] not in names:
                names.append(g["group"])
    from kpsim.engine.compare import GROUPS

    order = [n for n, _ in GROUPS if n in names]
    lines = []
    for name in order:
        cells = [name]
        for arch in ("arm64", "x86"):
            g = by[arch].get(name)
            cells.append("-" if g is None else f"{g['off']} -> {g['on']} ({g['added']:+d})")
        lines.append(cells)
    return lines


def _range(fig: dict[str, Any]) -> str:
    return f"{fig['percent']:+.2f}% [{fig['lo']:+.1f}, {fig['hi']:+.1f}]"


def text(doc: dict[str, Any]) -> str:
    """The plain-text report: per row, the event table and the overhead lines."""
    out = [
        f"arm64 POE vs x86 PKS, rows of table {doc['table']}, lazy-MMU batching "
        f"{'on' if doc['batching'] else 'off'} (counts: feature off -> on (added))",
        *(
            f"{arch}: {c['linear_map']}-mapped {'direct' if arch == 'x86' else 'linear'} map, "
            f"{c['allocator']} allocator, "
            f"series {c['series']}"
            for arch, c in doc["machines"].items()
        ),
    ]
    for row in doc["rows"]:
        out += ["", f"{row['row']} ({row['benchmark']})"]
        body = [["event", "arm64 (POR_EL1)", "x86 (IA32_PKRS)"], *_events(row)]
        widths = [max(len(r[i]) for r in body) for i in range(3)]
        for cells in body:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        fitted = row["arm64"]["fitted"]
        out.append(f"  overhead arm64, fitted:     {_range(fitted)}  ({fitted['basis']})")
        out.append(f"  overhead arm64, priors:     {_range(row['arm64']['prior'])}")
        out.append(f"  overhead x86, priors only:  {_range(row['x86']['prior'])}")
    out += [
        "",
        f"note: {doc['note']}.",
        "ranges of the prior figures: each architecture's hardware priors and, apart, the "
        "software priors divided and multiplied by 3 (a sensitivity range, not a "
        "confidence interval).",
    ]
    return "\n".join(line.rstrip() for line in out) + "\n"
