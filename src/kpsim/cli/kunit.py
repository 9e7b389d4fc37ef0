"""``kpsim kunit``: the kernel's KUnit suite ``kpkeys_hardened_pgtables`` on a freshly
booted machine (run before ``mark_rodata_ro``, as built-in KUnit tests are).
``--json`` adds the machine's counters after the suite ran. Exit 1 if any case fails."""

from __future__ import annotations

import argparse

from kpsim.cli.common import add_json, console, emit_json
from kpsim.cli.machine_opts import add_machine_options, config_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "kunit",
        help="run the kpkeys_hardened_pgtables KUnit cases",
        description="Boot a machine (before mark_rodata_ro, as built-in KUnit tests run) and "
        "run the series' five KUnit cases: each writes a page-table entry with "
        "copy_to_kernel_nofault() from the default context and expects -EFAULT "
        "(-14). Exit status 1 if a case fails.",
    )
    add_machine_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.kpkeys.kunit import run_suite
    from kpsim.machine import Machine

    m = Machine.boot(config_from_args(args), rodata_ro=False)
    result = run_suite(m)
    result["counters"] = dict(m.counters)
    status = 1 if result["failed"] else 0
    if args.json:
        emit_json(result)
        return status
    c = console()
    c.print(f"KUnit suite {result['suite']}")
    c.print("  (level=N: copy_to_kernel_nofault() returned N; -14 = -EFAULT: blocked, 0: landed)")
    for case in result["cases"]:  # type: ignore[attr-defined]
        checks = ", ".join(f"{k['level']}={k['result']}" for k in case["checks"])
        c.print(f"  {case['status']:4}  {case['name']:28} {checks}  {case['message']}")
    c.print(f"passed {result['passed']}, failed {result['failed']}, skipped {result['skipped']}")
    return status
