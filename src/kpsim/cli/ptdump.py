"""``kpsim ptdump [REGION]``: the kernel page tables as arm64's ``kernel_page_tables``;
``--scenario FILE`` / ``--workload SPEC`` dump them after running workloads, and
``--diff A B`` compares two dumps (saved text, a real kernel's file, or scenarios).

The shared part, a machine after a scenario's or the command line's workloads, is
:func:`machine_after` (``kpsim walk`` uses it too)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from typing import Any

from kpsim.cli.common import add_json, emit_json, on_terminal, progress_bar, warn_unsafe
from kpsim.cli.machine_opts import add_machine_options
from kpsim.errors import InputError, read_input_text
from kpsim.report import ptdump_x86
from kpsim.report.ptdump import REGION_NAMES, REGIONS, ptdump, ptdump_json, ptdump_text

OPTION_FIELDS = (
    "arch",
    "memory",
    "cpus",
    "poe",
    "linear_map",
    "hardened_pgtables",
    "allocator",
    "batching",
    "allow_unsafe_split",
    "seed",
)
DESCRIPTION = """\
Boot a machine and print its kernel page tables as arm64's
/sys/kernel/debug/kernel_page_tables does (CONFIG_PTDUMP_DEBUGFS, arch/arm64/mm/ptdump.c):
the same address markers, columns and spacing, runs of like entries merged as the
kernel's note_page merges them (holes included). --pkey adds kpsim's own column:
the POIndex of every valid run (which then also splits runs).

With --arch x86 the dump is x86-64's /sys/kernel/debug/page_tables/kernel
(arch/x86/mm/dump_pagetables.c): its markers (User Space ... Modules), its
columns (USR RW/ro PWT PCD PSE PAT GLB NX/x, then pgd/pud/pmd/pte) and its run
rules; x86 prints no pkey, so --pkey appends kpsim's pkey=N. Regions there: all,
linear (the Low Kernel Mapping), vmalloc, vmemmap, kimage, modules.

With --scenario FILE or --workload NAME:KEY=VALUE,... the workloads run first, on
the scenario's machine (machine options override its fields), and the tables are
dumped after them. --diff A B prints a unified diff of two dumps, each a saved
dump (kpsim ptdump > a.txt, or a real kernel's kernel_page_tables) or a scenario
(.toml, run then dumped); exit status 1 when they differ, as diff(1).
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ptdump",
        help="dump the kernel page tables (kernel_page_tables format), --diff two dumps",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "region",
        nargs="?",
        default="all",
        choices=REGION_NAMES,
        metavar="REGION",
        help=f"one of {', '.join(REGION_NAMES)} (default all)",
    )
    p.add_argument("--pkey", action="store_true", help="add a pkey=N column (kpsim's own)")
    p.add_argument("--diff", nargs=2, metavar=("A", "B"), help="diff two dumps or scenarios")
    add_workload_options(p)
    add_machine_options(p, scenario=True)
    p.set_defaults(**dict.fromkeys(OPTION_FIELDS))
    add_json(p)
    p.set_defaults(func=run)


def add_workload_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", metavar="FILE", help="run this scenario's workloads first")
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="run this workload first (repeatable; replaces the scenario's workloads)",
    )


def _scenario(path: str | None, workloads: list[str] | None) -> Any:
    from kpsim.machine.scenario import Scenario, load_scenario
    from kpsim.machine.scenario_text import parse_workload_option

    options = [parse_workload_option(t) for t in workloads or ()]
    if path is None:
        return Scenario({}, {}, options, None, 0, "<command line>")
    s = load_scenario(path)
    return dataclasses.replace(s, workloads=options) if options else s


def machine_after(
    args: argparse.Namespace, scenario_path: str | None = None, *, progress: bool = False
) -> Any:
    """Boot the machine (scenario and options) and run its workloads, in order, on it."""
    from kpsim.machine.boot import Machine
    from kpsim.machine.scenario import machine_config
    from kpsim.workloads.registry import run_workload, validate_params

    path = scenario_path if scenario_path is not None else args.scenario
    s = _scenario(path, args.workload)
    over = {k: getattr(args, k) for k in OPTION_FIELDS if getattr(args, k, None) is not None}
    params = [validate_params(w.name, w.params, spec=w) for w in s.workloads]
    cfg = machine_config(s, over)
    warn_unsafe(cfg, args.verb)
    n = len(s.workloads)
    with progress_bar(on_terminal(args)) as bar:
        m = Machine.boot(cfg, progress=None if bar is None else _scaled(bar, 0, n + 1))
        for i, (w, values) in enumerate(zip(s.workloads, params, strict=True), 1):
            if bar is not None:
                bar(i, n + 1, f"workload {w.name}")
            run_workload(m, w.name, values, seed=s.seed)
    return m


def _scaled(bar: Any, step: int, steps: int) -> Any:
    """A progress callback for sub-step ``step`` of ``steps`` (the boot's own steps
    shown as a fraction of it)."""

    def report(done: int, total: int, label: str) -> None:
        bar(step * total + done, steps * total, label)

    return report


def run(args: argparse.Namespace) -> int:
    if args.diff:
        return _diff(args)
    m = machine_after(args)
    items = dump_items(m, args.region, args.pkey)
    if not items:
        sys.stderr.write(
            f"kpsim ptdump: no {args.region} section: the walk reported no entry past its "
            "start marker (no table maps that range)\n"
        )
    if args.json:
        emit_json({"region": args.region, "sections": ptdump_json(items)})
    else:
        sys.stdout.write(ptdump_text(items))
    return 0


def dump_items(m: Any, region: str, pkey: bool) -> list[Any]:
    """The machine's dump for ``region``, in its architecture's format."""
    if getattr(m.arch, "name", "arm64") != "x86":
        return ptdump(m, region, pkey=pkey)
    if region not in ptdump_x86.REGION_NAMES:
        raise InputError(
            f"region {region!r} does not exist on x86 (use {', '.join(ptdump_x86.REGION_NAMES)})"
        )
    return ptdump_x86.ptdump(m, region, pkey=pkey)


def _dump_lines(args: argparse.Namespace, path: str) -> list[str]:
    """A dump's lines: a scenario file is run and dumped, anything else read as text."""
    if path.endswith(".toml"):
        return ptdump_text(
            dump_items(machine_after(args, path), args.region, args.pkey)
        ).splitlines()
    lines = read_input_text(path, "dump").splitlines()
    if not any(line.startswith("---[ ") for line in lines):
        raise InputError("not a kernel_page_tables dump (no ---[ marker ]--- line)", file=path)
    return _select_text(lines, args.region, path)


def _select_text(lines: list[str], region: str, path: str) -> list[str]:
    """The region's part of a saved dump, found by its marker lines."""
    if region == "all":
        return lines
    if region == "kimage":
        raise InputError("region kimage cannot be cut from a saved dump: use vmalloc", file=path)
    x86 = "---[ Low Kernel Mapping ]---" in lines  # an x86 page_tables/kernel dump
    table = ptdump_x86.REGIONS if x86 else REGIONS
    if region not in table:
        raise InputError(f"no {region} region in this dump's architecture", file=path)
    first, last = (f"---[ {name} ]---" for name in table[region])
    if first not in lines or last not in lines:
        raise InputError(f"no {first} ... {last} section", file=path)
    return lines[lines.index(first) : lines.index(last) + 1]


def _diff(args: argparse.Namespace) -> int:
    a, b = args.diff
    diff = list(
        difflib.unified_diff(
            _dump_lines(args, a), _dump_lines(args, b), fromfile=a, tofile=b, lineterm=""
        )
    )
    if args.json:
        emit_json({"a": a, "b": b, "region": args.region, "same": not diff, "diff": diff})
    else:
        sys.stdout.write("".join(f"{line}\n" for line in diff))
    return 1 if diff else 0
