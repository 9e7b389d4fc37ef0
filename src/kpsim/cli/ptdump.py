"""``kpsim ptdump [REGION]``: the kernel page tables as arm64's ``kernel_page_tables``."""

from __future__ import annotations

import argparse
import sys

from kpsim.cli.common import add_json, emit_json
from kpsim.cli.machine_opts import add_machine_options, boot_from_args
from kpsim.report.ptdump import REGION_NAMES, ptdump, ptdump_json, ptdump_text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ptdump",
        help="dump the kernel page tables (kernel_page_tables style)",
        description="Boot a machine and print its kernel page tables as arm64's "
        "/sys/kernel/debug/kernel_page_tables does (CONFIG_PTDUMP_DEBUGFS), one line per "
        "run of like entries, with an extra pkey= column.",
    )
    p.add_argument(
        "region",
        nargs="?",
        default="all",
        choices=REGION_NAMES,
        metavar="REGION",
        help=f"one of {', '.join(REGION_NAMES)} (default all)",
    )
    add_machine_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    m = boot_from_args(args)
    sections = ptdump(m, args.region)
    if args.json:
        emit_json({"region": args.region, "sections": ptdump_json(sections)})
    else:
        sys.stdout.write(ptdump_text(sections))
    return 0
