"""``kpsim pba``: run the table-churn workload and show the linear map's composition
over time, with the kpkeys table allocator's cache, reserve and splits; ``--shrink``
runs the allocator's shrinker on demand at the end (``--pressure`` exhausts memory
first, so that direct reclaim asks it). ``--json``: one document."""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.cli.common import add_json, emit_json, int_arg
from kpsim.cli.machine_opts import add_machine_options, boot_from_args
from kpsim.errors import InputError, OutOfMemory
from kpsim.report.linear_map import allocator_report, linear_map_report
from kpsim.workloads.pba_churn import churn, memory_pressure


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "pba",
        help="table churn: linear-map composition over time, shrink on demand",
        description="Boot a machine, run a table-heavy churn (processes that fork, fault and "
        "exit, vmalloc churn, a foreign linear-map change every 8 rounds) and print the "
        "linear map's composition and the kpkeys table allocator's cache, reserve, splits "
        "and set_memory_pkey() calls over time (docs/pba.md). Use --linear-map block to see "
        "the pkeys block allocator (PBA).",
    )
    add_machine_options(p)
    p.add_argument(
        "--rounds", type=int_arg, default=500, metavar="N", help="churn rounds (default 500)"
    )
    p.add_argument(
        "--pool", type=int_arg, default=64, metavar="N", help="live processes (default 64)"
    )
    p.add_argument(
        "--sample-every",
        type=int_arg,
        default=100,
        metavar="N",
        help="sample every N rounds (default 100)",
    )
    p.add_argument("--pressure", action="store_true", help="exhaust memory after the churn")
    p.add_argument("--shrink", action="store_true", help="run the shrinker at the end")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name, low in (("rounds", 0), ("pool", 1), ("sample_every", 1)):
        value = getattr(args, name)
        if value < low:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag}: must be at least {low}, got {value}")
    m = boot_from_args(args)
    tl = m.timeline

    def on_round(r: int) -> None:
        if (r + 1) % args.sample_every == 0:
            tl.sample(f"round {r + 1}")

    try:
        stats = churn(m, args.rounds, seed=args.seed, pool=args.pool, on_round=on_round)
    except OutOfMemory as err:
        raise InputError(
            f"the churn with --pool {args.pool} ran out of simulated memory ({err}); "
            "use a smaller --pool or more --memory"
        ) from None
    tl.sample("churn done")
    if args.pressure:
        memory_pressure(m, order=0)
        tl.sample("pressure")
    freed = 0
    if args.shrink:
        shrink = getattr(m.kpkeys, "shrink", None)
        freed = shrink() if callable(shrink) else 0
        tl.sample("shrink")
    doc: dict[str, Any] = {
        "config": m.config.as_dict(),
        "workload": stats,
        "shrunk_pages": freed,
        "linear_map": linear_map_report(m),
    }
    if args.json:
        emit_json(doc)
        return 0
    print(f"allocator {m.config.effective_allocator}, linear map {m.config.linear_map}")
    print(
        f"{'event':<16} {'tables':>7} {'1G':>3} {'32M':>4} {'2M':>5} {'64K':>6} {'4K':>7} "
        f"{'>=2M %':>7} {'cached':>6} {'rsv':>4} {'pud':>4} {'pmd':>5} {'smp':>6}"
    )
    for s in tl.samples:
        lv, sp = s["leaves"], s["splits"]
        print(
            f"{s['event']:<16} {s['pgtable_alloc']:>7} {lv['1G']:>3} {lv['32M']:>4} "
            f"{lv['2M']:>5} {lv['64K']:>6} {lv['4K']:>7} {s['block_pct']:>7.2f} "
            f"{s['cached']:>6} {s['reserve']:>4} {sp['pud']:>4} {sp['pmd']:>5} "
            f"{s['set_memory_pkey']:>6}"
        )
    a = allocator_report(m)
    state = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("counters", "name"))
    print(
        "columns: tables = table pages allocated so far; 1G..4K = linear-map leaves by size; "
        "cached = free\n  keyed pages in the allocator's cache; rsv = its reserve; pud, pmd = "
        "block splits so far;\n  smp = set_memory_pkey() calls so far"
    )
    print(f"shrunk {freed} pages; allocator state: {state or 'none (no cache, no reserve)'}")
    return 0
