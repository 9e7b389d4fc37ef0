"""``kpsim audit``: boot a machine, run the built-in mixed workload, and check the kpkeys
invariants (every table keyed, no stray keys, default context at rest, metadata and
TLBs agree with the tables) at every phase boundary and at the end. While the workload
runs, every page handed to the buddy allocator is checked to carry pkey 0
(:mod:`kpsim.audit.freewatch`), and every injected interrupt must have run in the
default context and given the interrupted section its context back.
Exit 1 if any invariant is violated."""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.cli.common import add_json, console, emit_json, int_arg, on_terminal, progress_bar
from kpsim.cli.machine_opts import add_machine_options, boot_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "audit",
        help="check the kpkeys_hardened_pgtables invariants",
        description="Boot a machine, run a synthetic mixed workload (faults, fork, exec, "
        "munmap, mprotect, madvise, mremap, brk, vmalloc churn, interrupts) and check "
        "kpsim's invariants: every live page-table page has pkey 1 in the linear map, no "
        "other page does, every freed page goes back with pkey 0, CPUs at rest are in the "
        "default context, TLBs agree with the tables. Exit status 1 on a violation.",
    )
    add_machine_options(p)
    g = p.add_argument_group("workload")
    g.add_argument(
        "--workload",
        choices=("mixed", "none"),
        default="mixed",
        help="what runs before the final audit (default mixed; none: audit the booted machine)",
    )
    g.add_argument(
        "--scale",
        type=int_arg,
        default=1,
        metavar="N",
        help="size of the mixed workload (1-64, default 1)",
    )
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.audit.invariants import Violation, audit
    from kpsim.errors import ConfigError

    if not 1 <= args.scale <= 64:
        raise ConfigError(f"--scale: must be between 1 and 64, got {args.scale}")
    m = boot_from_args(args)
    found: list[tuple[str, Violation]] = [("boot", v) for v in audit(m)]
    with progress_bar(on_terminal(args)) as bar:
        return _audit_run(args, m, found, bar)


def _audit_run(args: argparse.Namespace, m: Any, found: list[Any], bar: Any) -> int:
    """The workload under the free-path watch, then the report (``bar``: the progress
    callback on a terminal, or None; each audited phase is a step)."""
    from kpsim.audit.freewatch import FreeWatch
    from kpsim.audit.invariants import audit, check_interrupts
    from kpsim.errors import ConfigError, OutOfMemory
    from kpsim.workloads.mixed import mixed_workload

    workload: dict[str, Any] = {"name": args.workload}
    with FreeWatch(m) as watch:
        if args.workload == "mixed":

            def check(phase: str) -> None:
                if bar is not None:
                    bar(0, 1, f"audit: mixed workload, {phase}")
                found.extend((phase, v) for v in audit(m))

            try:
                result = mixed_workload(m, seed=m.config.seed, scale=args.scale, check=check)
            except OutOfMemory as err:
                raise ConfigError(
                    f"the mixed workload at --scale {args.scale} ran out of simulated memory "
                    f"({err}); use a smaller --scale or more --memory"
                ) from None
            workload.update(result.as_dict())
            found.extend(("interrupts", v) for v in check_interrupts(m, result.irqs))
    found.extend(("free path", v) for v in watch.violations)
    found.extend(("end", v) for v in audit(m))
    doc = {
        "config": m.config.as_dict(),
        "workload": workload,
        "free_watch": watch.as_dict(),
        "violations": [{"phase": ph, **v.as_dict()} for ph, v in found],
        "counters": dict(m.counters),
    }
    if args.json:
        emit_json(doc)
    else:
        c = console()
        fw = watch.as_dict()
        c.print(
            f"audit ({'no' if args.workload == 'none' else args.workload} workload): "
            f"{len(found)} violation(s)\n  frees: "
            f"{fw['pgtable_pages_freed']} table pages "
            f"({fw['pgtable_pages_to_buddy']} to the buddy allocator); "
            f"{fw['pages_freed_checked']} freed pages checked to carry pkey 0",
            markup=False,
        )
        for ph, v in found:
            c.print(f"  [{ph}] {v.invariant}: {v.detail}", markup=False)
    return 1 if found else 0
