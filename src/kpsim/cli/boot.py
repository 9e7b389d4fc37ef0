"""``kpsim boot``: boot a machine and summarise it (``--json``: one document)."""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.cli.common import add_json, emit_json
from kpsim.cli.machine_opts import add_machine_options, boot_from_args
from kpsim.report.linear_map import linear_map_report
from kpsim.units import format_size, parse_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "boot",
        help="boot a machine and summarise it",
        description="Boot a simulated arm64 (or, with --arch x86, x86-64) machine and "
        "print the linear map's leaves by size, the kernel page tables by level and the "
        "boot's event counts; on x86 also /proc/meminfo's DirectMap lines and the "
        "direct_map splits of /proc/vmstat (--json: the configuration, the allocator's "
        "state and every counter).",
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
    } | _x86_sections(m)


def _x86_sections(m: Any) -> dict[str, Any]:
    """x86 only: ``/proc/meminfo``'s DirectMap lines and ``/proc/vmstat``'s split events."""
    meminfo = getattr(m.arch, "arch_report_meminfo", None)
    if meminfo is None:
        return {}
    c = m.counters
    splits = ("direct_map_level2_splits", "direct_map_level3_splits")
    return {"meminfo": meminfo(), "vmstat": {k: c[k] for k in splits}}


def _leaves(mappings: dict[str, int]) -> str:
    """``2M 6 (12M)``: count and bytes of each leaf size."""
    return ", ".join(
        f"{size} {n} ({format_size(n * parse_size(size))})" for size, n in mappings.items()
    )


def _pages(levels: dict[str, int]) -> str:
    """``pte 2042 (7.98M)``: pages and bytes per level, then the total."""
    total = sum(levels.values())
    parts = [f"{lvl} {n} ({format_size(n * 4096)})" for lvl, n in levels.items()]
    return ", ".join(parts) + f"; total {total} ({format_size(total * 4096)})"


def run(args: argparse.Namespace) -> int:
    m = boot_from_args(args)
    doc = boot_document(m)
    if args.json:
        emit_json(doc)
        return 0
    mc, lm, cfg = doc["machine"], doc["linear_map"], doc["config"]
    print(
        f"kpsim boot: {format_size(mc['memory_bytes'])} RAM at {mc['dram_base']}, "
        f"{mc['cpus']} CPUs, {'PKS' if cfg.get('arch') == 'x86' else 'POE'} "
        f"{'on' if mc['poe'] else 'off'}"
    )
    print(
        f"kernel: linear map {cfg['linear_map']}, hardened_pgtables "
        f"{'on' if cfg['hardened_pgtables'] else 'off'}, allocator {cfg['allocator']}"
    )
    print(
        f"linear map: {format_size(lm['mapped_bytes'])} mapped "
        f"({lm['mapped_bytes']} bytes), {lm['block_pct']:g}% of it by blocks"
    )
    print(f"  leaves by size: {_leaves(lm['mappings'])}")
    print(f"  table pages by level: {_pages(lm['tables'])}")
    print(f"kernel page tables (pages by level): {_pages(doc['page_tables']['kernel'])}")
    if "meminfo" in doc:
        mi, vs = doc["meminfo"], doc["vmstat"]
        print("meminfo: " + ", ".join(f"{k} {v} kB" for k, v in mi.items()))
        print("vmstat: " + ", ".join(f"{k} {v}" for k, v in vs.items()))
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
