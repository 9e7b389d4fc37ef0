"""``kpsim kunit``: the kernel's KUnit suite ``kpkeys_hardened_pgtables`` on a freshly
booted machine (run before ``mark_rodata_ro``, as built-in KUnit tests are).

Output is KTAP (``kpsim.report.ktap``, what ``kunit.py parse`` reads) with ``--ktap``
or when stdout is not a terminal; a table for people on a terminal or with ``--text``;
``--json`` adds the machine's counters after the suite ran. Every write that was
blocked shows the ESR and FAR of its fault, decoded. Exit 1 if any case fails."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kpsim.cli.common import add_json, console, emit_json, on_terminal
from kpsim.cli.machine_opts import add_machine_options, boot_config, config_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "kunit",
        help="run the kpkeys_hardened_pgtables KUnit cases (KTAP when piped)",
        description="Boot a machine (before mark_rodata_ro, as built-in KUnit tests run) and "
        "run the series' five KUnit cases: each writes a page-table entry with "
        "copy_to_kernel_nofault() from the default context and expects -EFAULT "
        "(-14). Prints KTAP version 1 (Documentation/dev-tools/ktap.rst, as the kernel's "
        "KUnit prints it: `kpsim kunit | kunit.py parse`) when stdout is not a terminal "
        "or with --ktap, a table otherwise. Exit status 1 if a case fails.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--ktap", action="store_true", help="print KTAP even on a terminal")
    fmt.add_argument("--text", action="store_true", help="print the table even when piped")
    add_machine_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.kpkeys.kunit import run_suite
    from kpsim.report.ktap import ktap

    m = boot_config(config_from_args(args), on_terminal(args), rodata_ro=False)
    result = run_suite(m)
    result["counters"] = dict(m.counters)
    status = 1 if result["failed"] else 0
    if args.json:
        emit_json(result)
    elif args.ktap or (not args.text and not sys.stdout.isatty()):
        sys.stdout.write(ktap(result))
    else:
        _print_table(result)
    return status


def _print_table(result: dict[str, Any]) -> None:
    from kpsim.report.ktap import blocked_write_lines

    c = console()
    c.print(f"KUnit suite {result['suite']}")
    c.print("  (level=N: copy_to_kernel_nofault() returned N; -14 = -EFAULT: blocked, 0: landed)")
    for case in result["cases"]:
        checks = ", ".join(f"{k['level']}={k['result']}" for k in case["checks"])
        c.print(f"  {case['status']:4}  {case['name']:28} {checks}  {case['message']}")
        for check in case["checks"]:
            for line in blocked_write_lines(check):
                c.print(f"          {line}")
    c.print(f"passed {result['passed']}, failed {result['failed']}, skipped {result['skipped']}")
