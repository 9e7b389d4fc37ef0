"""``kpsim audit``: boot a machine, exercise it, and check the kpkeys invariants
(every table keyed, no stray keys, default context at rest, metadata and TLBs agree
with the tables). Exit 1 if any invariant is violated."""

from __future__ import annotations

import argparse

from kpsim.cli.common import add_json, console, emit_json
from kpsim.cli.machine_opts import add_machine_options, boot_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="check the kpkeys_hardened_pgtables invariants")
    add_machine_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.audit.invariants import audit
    from kpsim.mm.vmalloc import vfree, vmalloc

    m = boot_from_args(args)
    # A kernel-side workload: vmalloc churn that allocates kernel tables.
    addrs = [vmalloc(m.k, (i % 7 + 1) << 12) for i in range(64)]
    for a in addrs[::2]:
        vfree(m.k, a)
    violations = audit(m)
    doc = {
        "config": m.config.as_dict(),
        "violations": [v.as_dict() for v in violations],
        "counters": dict(m.counters),
    }
    if args.json:
        emit_json(doc)
    else:
        c = console()
        c.print(f"audit: {len(violations)} violation(s)")
        for v in violations:
            c.print(f"  {v.invariant}: {v.detail}")
    return 1 if violations else 0
