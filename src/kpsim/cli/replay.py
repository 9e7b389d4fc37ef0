"""``kpsim replay FILE``: replay a recorded ``perf script`` trace in a simulated machine.

Prints, per process of the trace, its page-table pages (VmPTE: PTE + PMD + PUD
tables) at peak and just before exit, then the machine's counters. ``--json`` prints
``{"processes": [{"pid", "comm", "pt_pages_peak", "pt_pages_at_exit", ...}],
"counters": {...}, ...}``. ``--cost`` replays the trace a second time with the
hardening off and adds the cost model's estimate of its overhead for this program.
A trace line that cannot be read is reported with its line number, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpsim.cli.common import add_json, emit_json, on_terminal, plural, progress_bar
from kpsim.cli.machine_opts import add_machine_options, config_from_args
from kpsim.errors import InputError, OutOfMemory
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.mm.mm_types import SyscallError

if TYPE_CHECKING:
    from kpsim.report.cost import CostTable

DESCRIPTION = """\
Replay a perf script text trace (from `kpsim record`, or plain `perf script`) in a
simulated machine: processes, threads, vfork/posix_spawn, exec, exit, every mapping
change at the address the real kernel returned, every page fault at its address.
Mappings the kernel made at exec (stack, vdso, ELF image, interpreter) are created
when first used. Processes running before the trace began start empty."""

EPILOG = """\
exit status: 0 replayed (and, given live VmPTE figures, every process agrees); 1 some
process's pages at exit differ from the live VmPTE; 2 unreadable trace (file:line:
problem) or bad option.

examples:
  kpsim record --vmpte -o ls.trace -- ls -l /
  kpsim replay ls.trace
  kpsim replay --json --cost --memory 1G ls.trace
"""

#: Cost-model event names fed from machine counters of another name (when absent).
COST_ALIASES = {
    "page_fault": "pgfault",
    "page_alloc": "page_alloc.alloc",
    "page_free": "page_alloc.free",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replay",
        help="replay a perf trace of a real program in a simulated machine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, metavar="FILE", help="perf script text trace")
    add_machine_options(p)
    p.add_argument(
        "--cost",
        action="store_true",
        help="also replay with the hardening off: the cost model's overhead estimate",
    )
    p.add_argument("--costs", type=Path, metavar="FILE", help="TOML [costs] table for --cost")
    p.add_argument(
        "--vmpte",
        type=Path,
        metavar="JSON",
        help="live VmPTE at exit to compare with (default: FILE.vmpte.json if it exists)",
    )
    add_json(p)
    p.set_defaults(func=run)


def _replay(
    cfg: MachineConfig,
    events: list[Any],
    file: str,
    progress: bool = False,
    areas: dict[int, tuple[int, int]] | None = None,
) -> tuple[Any, dict[str, int]]:
    """Boot ``cfg``, replay; the result and the counters the replay added. With
    ``progress``, the boot's steps and the trace line reached on a bar; ``areas``: the
    recorded argument areas (``FILE.args.json``)."""
    from kpsim.workloads.replay import replay_events

    with progress_bar(progress) as bar:
        m = Machine.boot(cfg, progress=bar)
        before = m.counters.snapshot()
        try:
            res = replay_events(m, events, file=file, progress=bar, arg_areas=areas)
        except (OutOfMemory, SyscallError) as err:
            if not isinstance(err, OutOfMemory) and err.errno != errno.ENOMEM:
                raise
            fi = m.k.fault_inject
            if fi is not None and fi.injected:  # a replay does not go on past one
                problem = (
                    f"an injected allocation failure stopped the replay ({err}); "
                    "fault injection is survived by kpsim run, audit and explore"
                )
            else:
                problem = f"the simulated machine ran out of memory ({err}); use a larger --memory"
            raise InputError(problem, file=file) from None
    return res, m.counters.since(before)


def cost_counts(delta: dict[str, int]) -> dict[str, int]:
    """Counter deltas under the cost model's event names (:data:`COST_ALIASES`)."""
    out = dict(delta)
    for name, source in COST_ALIASES.items():
        if name not in out and source in delta:
            out[name] = delta[source]
    return out


def run(args: argparse.Namespace) -> int:
    from kpsim.report.calibration import costs_for
    from kpsim.workloads.trace import read_trace
    from kpsim.workloads.trace_record import read_arg_areas, read_vmpte

    file = str(args.file)
    cfg = config_from_args(args)
    if args.costs is not None and not args.cost:
        raise InputError("--costs FILE applies only with --cost")
    # bad costs: before any replay
    costs, label = (
        costs_for(None if args.costs is None else str(args.costs), cfg.arch)
        if args.cost
        else (None, "")
    )
    live_path = args.vmpte or Path(f"{args.file}.vmpte.json")
    try:
        compare = args.vmpte is not None or live_path.exists()
    except OSError:  # an unreadable directory: the trace's own read reports it
        compare = False
    live = read_vmpte(live_path) if compare else None
    args_path = Path(f"{args.file}.args.json")
    areas = read_arg_areas(args_path) if args_path.exists() else None
    events = read_trace(args.file)
    res, delta = _replay(cfg, events, file, on_terminal(args), areas)
    doc: dict[str, Any] = {
        "trace": file,
        "arch": cfg.arch,
        "arg_areas": None if areas is None else str(args_path),
        "processes": [p.as_dict() for p in res.processes],
        "counters": res.counters,
        "replay_counters": delta,
        "records": res.records,
        "ops": res.ops,
        "skipped": res.skipped,
        "refused": res.refused,
        "lazy_vmas": res.lazy_vmas,
        "notes": res.notes,
    }
    if live is not None:
        doc["agreement"] = _compare(doc["processes"], live)
    if args.cost:
        assert costs is not None
        doc["cost"] = _cost(costs, cfg, events, file, delta, label, areas)
    if args.json:
        emit_json(doc)
    else:
        _print(doc)
    return 1 if live is not None and doc["agreement"]["differ"] else 0


def _compare(procs: list[dict[str, Any]], live: dict[int, int]) -> dict[str, Any]:
    """Replayed ``pt_pages_at_exit`` against the live VmPTE read at exit."""
    agree, differ = 0, []
    for p in procs:
        want = live.get(p["pid"])
        p["live_vmpte_at_exit"] = want
        if want is None:
            continue
        if p["pt_pages_at_exit"] == want:
            agree += 1
        else:
            differ.append({"pid": p["pid"], "comm": p["comm"], "model": p["pt_pages_at_exit"],
                           "live": want})  # fmt: skip
    return {"compared": agree + len(differ), "agree": agree, "differ": differ}


def _cost(
    costs: CostTable,
    cfg: MachineConfig,
    events: list[Any],
    file: str,
    delta: dict[str, int],
    label: str = "",
    areas: dict[int, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    from kpsim.engine.job import overhead_estimate

    on_cfg = dataclasses.replace(cfg, hardened_pgtables=True)
    off_cfg = dataclasses.replace(cfg, hardened_pgtables=False)
    on = delta if cfg.hardened_pgtables else _replay(on_cfg, events, file, areas=areas)[1]
    off = _replay(off_cfg, events, file, areas=areas)[1]
    on_c, off_c = cost_counts(on), cost_counts(off)
    ov = overhead_estimate(on_c, off_c, costs, cfg.batching, label, cfg.arch)
    if ov is None:
        return {"percent": None, "reason": "the feature-off replay costs 0 cycles", "costs": label}
    return {
        "percent": ov["percent"],
        "interval": ov["interval"],
        "costs": label,
        "on_cycles": ov["on_cycles"],
        "off_cycles": ov["off_cycles"],
        "contributions": ov["contributions"],
        "on_counters": on_c,
        "off_counters": off_c,
    }


def _print(doc: dict[str, Any]) -> None:
    procs = doc["processes"]
    print(
        f"kpsim replay: {doc['trace']}: {doc['records']} records, {plural(len(procs), 'process')}, "
        f"{doc['ops'].get('Fault', 0)} faults"
    )
    agreement = doc.get("agreement")
    live = " live_vmpte_at_exit" if agreement is not None else ""
    print(f"  {'pid':>8}  {'comm':<16} {'pt_pages_peak':>13} {'pt_pages_at_exit':>16}{live}")
    for p in procs:
        at_exit = "-" if p["pt_pages_at_exit"] is None else str(p["pt_pages_at_exit"])
        mark = " (running before the trace)" if p["pre_existing"] and not p["exec_first"] else ""
        if agreement is not None:
            lv = p["live_vmpte_at_exit"]
            mark = f" {'-' if lv is None else lv:>18}{mark}"
        print(f"  {p['pid']:>8}  {p['comm']:<16} {p['pt_pages_peak']:>13} {at_exit:>16}{mark}")
    if agreement is not None:
        print(
            f"  agreement with the live VmPTE at exit: {agreement['agree']} of "
            f"{plural(agreement['compared'], 'process')}"
        )
    for note in doc["notes"]:
        print(f"  note: {note}")
    for title in ("skipped", "refused"):
        items = sorted(doc[title].items(), key=lambda kv: (-kv[1], kv[0]))
        if items:
            print(f"  {title}: " + "; ".join(f"{k} x{v}" for k, v in items))
    c = doc["replay_counters"]
    keys = (
        ("pgfault", "pgtable_alloc", "pgtable_free", "pte_write", "tlbi_va", "por_write", "isb")
        if doc["arch"] == "arm64"
        else ("pgfault", "pgtable_alloc", "pgtable_free", "pte_write", "invlpg", "pkrs_write")
    )
    print("  counters: " + ", ".join(f"{k} {c.get(k, 0)}" for k in keys))
    cost = doc.get("cost")
    if cost is not None:
        if cost["percent"] is None:
            print(f"  cost: no estimate ({cost['reason']})")
        else:
            top = ", ".join(f"{k} {v:+.2f}" for k, v in list(cost["contributions"].items())[:4])
            iv = cost["interval"]
            level = (
                f"{int(iv['level'] * 100)} % interval"
                if iv["level"] is not None
                else "the priors' ÷3/×3 sensitivity range"
            )
            print(
                f"  cost (estimated; the counters above are exact): hardening overhead "
                f"{cost['percent']:+.2f}% [{iv['lo']:+.1f}, {iv['hi']:+.1f}] "
                f"({level}) "
                f"(on {cost['on_cycles']:.0f} vs off {cost['off_cycles']:.0f} cycles)\n"
                f"    costs: {cost['costs']}\n"
                f"    top events, percentage points: {top}"
            )
