"""``kpsim run``: the main job. For now: boot the default machine (4 GiB, 2 CPUs, POE,
kpkeys_hardened_pgtables on, PTE-mapped linear map), run the KUnit suite and the
audit, and print the machine's table counts and event counters. Scenario files,
workloads and the cost model join it as they land (issue 7)."""

from __future__ import annotations

import argparse

from kpsim.cli.common import add_json, console, emit_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="the main job: boot, KUnit suite, audit, counters")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.audit.invariants import audit
    from kpsim.kpkeys.kunit import run_suite
    from kpsim.machine import MachineConfig, boot

    m = boot(MachineConfig(), rodata_ro=False)
    kunit = run_suite(m)
    m.mark_rodata_ro()
    violations = audit(m)
    doc = {
        "machine": m.config.as_dict(),
        "page_tables": {"kernel": m.k.pgtable.count("kernel")},
        "kunit": kunit,
        "audit": {"violations": [v.as_dict() for v in violations]},
        "counters": dict(m.counters),
    }
    status = 1 if kunit["failed"] or violations else 0
    if args.json:
        emit_json(doc)
        return status
    c = console()
    cfg = m.config
    c.print(
        f"[bold]kpsim[/bold]: arm64, {cfg.memory >> 30} GiB, {cfg.cpus} CPUs, POE "
        f"{'on' if cfg.poe else 'off'}, linear map {cfg.linear_map}, "
        f"kpkeys_hardened_pgtables {'on' if cfg.hardened_pgtables else 'off'} "
        f"({cfg.effective_allocator} allocator, batching {'on' if cfg.batching else 'off'})"
    )
    c.print(f"kernel page tables: {doc['page_tables']['kernel']}")
    c.print(
        f"KUnit kpkeys_hardened_pgtables: {kunit['passed']} passed, {kunit['failed']} failed, "
        f"{kunit['skipped']} skipped"
    )
    for case in kunit["cases"]:  # type: ignore[attr-defined]
        c.print(f"  {case['status']:4}  {case['name']}  {case['message']}")
    c.print(f"audit: {len(violations)} violation(s)")
    for v in violations[:10]:
        c.print(f"  {v.invariant}: {v.detail}")
    keys = (
        "pgtable_alloc",
        "pgtable_free",
        "set_memory_pkey",
        "set_memory_pkey_page",
        "por_write",
        "isb",
        "kpkeys_guard_entries",
        "lazy_mmu_sections",
        "pte_write",
        "tlbi",
        "warnings",
    )
    c.print("counters: " + ", ".join(f"{k}={m.counters[k]}" for k in keys))
    return status
