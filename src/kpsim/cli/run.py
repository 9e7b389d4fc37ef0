"""``kpsim run [SCENARIO]``: the main job (for now: boot a machine and summarise it)."""

from __future__ import annotations

import argparse

from kpsim.cli.common import add_json, emit_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="the main job: boot, run the default scenario, report")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.hw.arm64.system import Arm64System
    from kpsim.hw.physmem import PhysicalMemory

    system = Arm64System(PhysicalMemory(0x4000_0000, 1 << 32), 2)
    doc = {"machine": {"memory_bytes": system.mem.size, "cpus": len(system.cpus)}}
    if args.json:
        emit_json(doc)
    else:
        print(f"kpsim: {len(system.cpus)} CPUs, {system.mem.size >> 30} GiB")
    return 0
