"""``kpsim walk ADDR``: one kernel address's translation in ``swapper_pg_dir``, level by
level: arm64's ``show_pte()`` lines, then each level's descriptor decoded (the rows of
``kpsim decode``) and where the walk ends (the physical address, or the level of the
translation fault). ``--scenario``/``--workload`` run workloads first, as for ptdump.
With ``--arch x86``: x86-64's ``dump_pagetable()`` line (``PGD .. P4D .. PUD .. PMD ..
PTE ..``) and each entry decoded as ``kpsim decode x86-pte`` and its siblings do."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kpsim.cli.common import add_json, emit_json
from kpsim.cli.machine_opts import add_machine_options
from kpsim.cli.ptdump import OPTION_FIELDS, add_workload_options, machine_after
from kpsim.errors import InputError
from kpsim.units import parse_u64

EPILOG = """\
examples:
  kpsim walk 0xffff000000001000            a linear-map address (PTE-mapped: 4 levels)
  kpsim walk 0xffff800080000000            the start of the kernel image (text)
  kpsim walk 0xffff000000001000 --linear-map block --no-hardened-pgtables
  kpsim walk --arch x86 0xffff888000001000 an x86 direct-map address (4K: 4 levels)
  kpsim walk --arch x86 0xffffffff81000000 the x86 kernel text (a 2M page)
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "walk",
        help="walk one kernel address through the page tables, each level decoded",
        description="Boot a machine (and run workloads, with --scenario/--workload) and "
        "walk ADDR through swapper_pg_dir as the MMU does: the kernel's show_pte() lines "
        "(what an oops prints), then every level's descriptor decoded.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("addr", metavar="ADDR", help="a kernel virtual address (hex: 0xffff...)")
    add_workload_options(p)
    add_machine_options(p, scenario=True)
    p.set_defaults(**dict.fromkeys(OPTION_FIELDS))
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    va = parse_u64(args.addr.strip(), what="address")
    m = machine_after(args)
    from kpsim.report import walk as walk_arm64
    from kpsim.report import walk_x86

    x86 = getattr(m.arch, "name", "arm64") == "x86"
    w: Any
    try:
        w = walk_x86.walk(m, va) if x86 else walk_arm64.walk(m, va)
    except ValueError as err:  # a user address, or one in neither half
        raise InputError(f"{err}: walk takes a kernel address (0xffff...)") from None
    if args.json:
        emit_json(_doc(w, x86))
    else:
        sys.stdout.write(_text(w, x86))
    return 0


def _result_x86(w: Any) -> str:
    from kpsim.hw.x86 import pte as e
    from kpsim.report.walk_x86 import region

    where = f"{w.va:#018x} ({region(w.va)})"
    if w.leaf is None:
        lvl = w.fault_level
        return f"{where}: not mapped: an access takes a #PF (P=0 in the level {lvl} entry)"
    v, lvl = w.leaf.value, w.leaf.level
    size = {1: "4K", 2: "2M", 3: "1G"}[lvl]
    rw = "read-write" if v & e.RW else "read-only"
    who = "user" if v & e.US else "supervisor"
    nx = ", no execute" if v & e.NX else ", executable"
    return f"{where} -> PA {w.pa:#x}: level {lvl} {size} page, {rw}, {who}{nx}, pkey {e.pkey(v)}"


def _result(w: Any) -> str:
    from kpsim.report.walk import region

    where = f"{w.va:#018x} ({region(w.va)})"
    if w.leaf is None:
        return f"{where}: not mapped: an access takes a level {w.fault_level} translation fault"
    desc = w.leaf.desc.describe()
    kind = "page" if w.leaf.level == 3 else "block"
    return (
        f"{where} -> PA {w.pa:#x}: level {w.leaf.level} {kind} ({desc['maps']}), "
        f"EL1 {desc['el1_access']}, EL0 {desc['el0_access']}, pkey {desc['pkey']}, "
        f"{desc['memory_type']}"
    )


def _decode(step: Any, x86: bool) -> tuple[str, Any, dict[str, Any]]:
    """(title, rows, words) of one walked entry, as ``kpsim decode`` shows it."""
    from kpsim.cli.decode import decode_value, descriptor

    if x86:
        return decode_value(step.decode_kind, step.value)
    return descriptor(step.name, step.value)


def _text(w: Any, x86: bool = False) -> str:
    from kpsim.cli.decode import rows_text

    out = [*w.show_pte(), ""]
    for step in w.steps:
        title, rows, words = _decode(step, x86)
        head = f"{step.name}[{step.index}] at PA {step.entry_pa:#x}: {title}"
        out.append(rows_text(head, rows, str(words["summary"])))
    out.append(_result_x86(w) if x86 else _result(w))
    return "\n".join(out) + "\n"


def _doc(w: Any, x86: bool = False) -> dict[str, Any]:
    """The walk as JSON; the root and the dump are named as each kernel names them
    (x86: CR3 and dump_pagetable(); arm64: pgdp and show_pte())."""
    root, dump = ("cr3", "dump_pagetable") if x86 else ("pgdp", "show_pte")
    return {
        "va": f"{w.va:#018x}",
        "mm": w.mm,
        root: f"{w.root_pa:#x}",
        dump: w.show_pte(),
        "steps": [
            {
                "level": s.level,
                "table": s.name,
                "index": s.index,
                "table_pa": f"{s.table_pa:#x}",
                "entry_pa": f"{s.entry_pa:#x}",
                "value": f"{s.value:#018x}",
                "decoded": _decode(s, x86)[2],
            }
            for s in w.steps
        ],
        "pa": None if w.pa is None else f"{w.pa:#x}",
        "fault_level": w.fault_level,
        "summary": _result_x86(w) if x86 else _result(w),
    }
