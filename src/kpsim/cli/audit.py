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
        choices=("mixed", "soak", "none"),
        default="mixed",
        help="what runs before the final audit (default mixed; soak: random kernel "
        "operations, audited every --ops/10 and after a full teardown with the free pages "
        "counted; none: audit the booted machine)",
    )
    g.add_argument(
        "--ops",
        type=int_arg,
        default=10000,
        metavar="N",
        help="operations of the soak workload (1-10^8, default 10000)",
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
    if not 1 <= args.ops <= 10**8:
        raise ConfigError(f"--ops: must be between 1 and 10^8, got {args.ops}")
    m = boot_from_args(args)
    found: list[tuple[str, Violation]] = [("boot", v) for v in audit(m)]
    with progress_bar(on_terminal(args)) as bar:
        return _audit_run(args, m, found, bar)


def _audit_run(args: argparse.Namespace, m: Any, found: list[Any], bar: Any) -> int:
    """The workload under the free-path watch, then the report (``bar``: the progress
    callback on a terminal, or None; each audited phase is a step)."""
    from kpsim.audit.freewatch import FreeWatch
    from kpsim.audit.invariants import Violation, audit, check_interrupts
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
            except (OutOfMemory, OSError) as err:
                if m.k.fault_inject is None or getattr(err, "errno", 12) != 12:
                    raise ConfigError(
                        f"the mixed workload at --scale {args.scale} ran out of simulated "
                        f"memory ({err}); use a smaller --scale or more --memory"
                    ) from None
                workload["stopped"] = f"stopped by -ENOMEM: {err}"  # still audited below
            else:
                workload.update(result.as_dict())
                found.extend(("interrupts", v) for v in check_interrupts(m, result.irqs))
        elif args.workload == "soak":
            from kpsim.workloads.soak import soak

            def check_soak(phase: str) -> None:
                found.extend((phase, v) for v in audit(m))

            every = max(1, args.ops // 10)
            res = soak(m, args.ops, seed=m.config.seed, audit_every=every, check=check_soak)
            workload.update(res.as_dict())
            if res.balance["lost"]:
                lost = res.balance["lost"]
                found.append(("end", Violation("pages", f"{lost} page(s) lost after teardown")))
    found.extend(("free path", v) for v in watch.violations)
    found.extend(("end", v) for v in audit(m))
    doc = {
        "config": m.config.as_dict(),
        "workload": workload,
        "free_watch": watch.as_dict(),
        "fault_inject": m.k.fault_inject.as_dict() if m.k.fault_inject is not None else None,
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
        if "operations" in workload:
            b = workload["balance"]
            c.print(
                f"  soak: {workload['operations']} operations, "
                f"{sum(workload['enomem'].values())} met -ENOMEM, {workload['audits']} audits; "
                f"free pages {b['free_before']} -> {b['free_after']}, {b['lost']} lost",
                markup=False,
            )
        if "stopped" in workload:
            c.print(f"  workload {workload['stopped']}", markup=False)
        fi = m.k.fault_inject
        if fi is not None:
            sites = ", ".join(f"{s} {a.injected}/{a.calls}" for s, a in fi.attrs.items())
            c.print(f"  fault injection: {fi.injected} failures injected ({sites})", markup=False)
        for ph, v in found:
            c.print(f"  [{ph}] {v.invariant}: {v.detail}", markup=False)
    return 1 if found else 0
