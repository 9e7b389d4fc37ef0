"""``kpsim boot``: boot a machine and summarise it (``--json``: one document)."""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.cli.common import add_json, emit_json
from kpsim.cli.machine_opts import add_machine_options, boot_from_args
from kpsim.report.linear_map import linear_map_report
from kpsim.units import format_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "boot",
        help="boot a machine and summarise it",
        description="Boot a simulated arm64 machine and print the linear map's leaves by "
        "size, the kernel page tables by level and the boot's event counts (--json: the "
        "configuration, the allocator's state and every counter).",
    )
    add_machine_options(p)
    add_json(p)
    p.set_defaults(func=run)


def boot_document(m: Any) -> dict[str, Any]:
    """The ``kpsim boot --json`` document for a booted machine."""
    return {
        "machine": {
            "memory_bytes": m.config.memory,
            "dram_base": f"{m.config.dram_base:#x}",
            "cpus": m.config.cpus,
            "poe": m.config.poe,
        },
        "config": m.config.as_dict(),
        "linear_map": linear_map_report(m),
        "page_tables": {"kernel": m.k.pgtable.count("kernel")},
        "counters": m.counters,
    }


def run(args: argparse.Namespace) -> int:
    m = boot_from_args(args)
    doc = boot_document(m)
    if args.json:
        emit_json(doc)
        return 0
    mc, lm = doc["machine"], doc["linear_map"]
    print(
        f"kpsim boot: {format_size(mc['memory_bytes'])} RAM at {mc['dram_base']}, "
        f"{mc['cpus']} CPUs, POE {'on' if mc['poe'] else 'off'}"
    )
    cfg = doc["config"]
    print(
        f"kernel: linear map {cfg['linear_map']}, hardened_pgtables "
        f"{'on' if cfg['hardened_pgtables'] else 'off'}, allocator {cfg['allocator']}"
    )
    maps = ", ".join(f"{k} {v}" for k, v in lm["mappings"].items())
    print(f"linear map leaves (count by size): {maps}")
    pt = ", ".join(f"{k} {v}" for k, v in doc["page_tables"]["kernel"].items())
    print(f"kernel page tables (pages by level): {pt}")
    c = doc["counters"]
    print(
        f"events: tlbi {c.get('tlbi', 0)}, splits pud {c.get('split_pud', 0)} "
        f"pmd {c.get('split_pmd', 0)} cont {c.get('split_cont', 0)}, "
        f"pte writes {c.get('pte_write', 0)}"
    )
    print(
        f"keying: {c.get('set_memory_pkey', 0)} set_memory_pkey() calls keyed "
        f"{c.get('set_memory_pkey_page', 0)} table pages"
    )
    return 0
