"""``kpsim explore``: interleavings of interrupts, exceptions, context switches and the
other CPU with a workload's guarded page-table paths (:mod:`kpsim.engine.explore`).

``kpsim explore`` explores up to ``--schedules N`` schedules (default 20000) and prints
a summary; ``--disable STEP`` (repeatable) switches a protective step off; on a
violation the shortest violating schedule found is saved (``--save FILE``, default
``explore-violation.sched``) and the exit status is 1. ``--replay FILE`` runs one saved
schedule; a malformed file gets one line ``FILE:LINE: problem`` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kpsim.cli.common import add_json, console, emit_json, int_arg
from kpsim.cli.machine_opts import add_machine_options, config_from_args
from kpsim.engine.explore import (
    INJECTIONS,
    STEPS,
    STEPS_WITHOUT_MEANING,
    WORKLOAD_INJECTIONS,
    WORKLOADS,
    ExploreConfig,
    Explorer,
    Outcome,
    Summary,
    explore,
    parse_schedule,
    schedule_text,
)
from kpsim.errors import InputError, read_input_text

DEFAULT_SAVE = "explore-violation.sched"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "explore",
        help="inject IRQs, exceptions, context switches and the other CPU at every point "
        "of guarded page-table paths, and check the protection after each schedule",
        description=(
            "Enumerate the points of a workload's guarded writes and lazy-MMU sections "
            "(pkey-register writes: POR_EL1 and its ISB on arm64, WRMSR to IA32_PKRS on x86; "
            "table stores, set_memory_pkey) and inject there, one "
            "schedule at a time (exhaustively while a level of injections fits the budget, "
            "by seeded sampling after). Steps: "
            + "; ".join(f"{k}: {v}" for k, v in STEPS.items())
            + ". Injections: "
            + "; ".join(f"{k}: {v}" for k, v in INJECTIONS.items())
            + "."
        ),
    )
    p.add_argument(
        "--schedules", type=int_arg, default=20000, metavar="N", help="budget (default 20000)"
    )
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="STEP",
        help=f"switch a protective step off (repeatable): {', '.join(STEPS)}",
    )
    p.add_argument(
        "--inject",
        default=None,
        metavar="KIND,...",
        help=f"injections to use (default: the workload's; {', '.join(INJECTIONS)})",
    )
    p.add_argument(
        "--workload", default="guarded-paths", metavar="|".join(WORKLOADS), help="the workload"
    )
    p.add_argument("--replay", metavar="FILE", help="run one saved schedule")
    p.add_argument(
        "--save", metavar="FILE", help=f"where the shortest violating schedule goes "
        f"(default {DEFAULT_SAVE})"
    )  # fmt: skip
    p.add_argument(
        "--audit-every", type=int_arg, default=64, metavar="N",
        help="run the full audit after every Nth schedule and the last (default 64)",
    )  # fmt: skip
    add_machine_options(p)
    p.set_defaults(memory="256M")
    add_json(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> ExploreConfig:
    unknown = [s for s in args.disable if s not in STEPS]
    if unknown:
        raise InputError(f"--disable {unknown[0]}: unknown step (steps: {', '.join(STEPS)})")
    if args.workload not in WORKLOADS:
        raise InputError(f"--workload {args.workload}: unknown (use {', '.join(WORKLOADS)})")
    mc = config_from_args(args)
    for step in args.disable:
        why = STEPS_WITHOUT_MEANING.get(mc.arch, {}).get(step)
        if why is not None:
            raise InputError(f"--disable {step}: no such step on {mc.arch}: {why}")
    if mc.arch == "x86" and args.linear_map == "block" and args.workload != "split":
        raise InputError(
            f"--linear-map block: workload {args.workload} runs on a 4K direct map on x86 "
            "(chosen for it); only workload split runs on a block-mapped one"
        )
    return ExploreConfig(mc, args.workload, frozenset(args.disable))


def _kinds(text: str | None, workload: str) -> list[str]:
    if text is None:
        return list(WORKLOAD_INJECTIONS[workload])
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for k in kinds:
        if k not in INJECTIONS:
            raise InputError(f"--inject {k}: unknown injection (use {', '.join(INJECTIONS)})")
    if not kinds:
        raise InputError("--inject: no injection given")
    return kinds


def _outcome_doc(out: Outcome, points: list[str]) -> dict[str, Any]:
    return {
        "schedule": [
            {"point": i, "at": points[i] if i < len(points) else None, "inject": k}
            for i, k in out.schedule
        ],
        "violations": [{"check": v.check, "detail": v.detail} for v in out.violations],
    }


def _notes(cfg: ExploreConfig) -> list[str]:
    out = []
    if "reserve-ready-check" in cfg.disabled and cfg.workload != "split":
        out.append(
            "reserve-ready-check has no effect on workload guarded-paths (no PBA on a "
            "PTE-mapped linear map): use --workload split"
        )
    return out


def _summary_doc(s: Summary, saved: str | None) -> dict[str, Any]:
    mc = s.machine or s.cfg.machine
    counts: dict[str, int] = {}
    for p in s.points:
        counts[p] = counts.get(p, 0) + 1
    return {
        "workload": s.cfg.workload,
        "arch": mc.arch,
        "series": mc.series,
        "machine": mc.as_dict(),
        "disabled": sorted(s.cfg.disabled),
        "points": len(s.points),
        "points_by_kind": counts,
        "explored": s.explored,
        "by_injections": {str(k): v for k, v in sorted(s.by_level.items())},
        "exhaustive_levels": s.exhaustive_levels,
        "violating": s.violating,
        "first_violation": None if s.first is None else _outcome_doc(s.first, s.points),
        "saved": saved,
        "seconds": round(s.seconds, 3),
        "schedules_per_second": round(s.rate, 1),
        "boot_findings": s.boot_findings,
        "notes": _notes(s.cfg),
        "status": 1 if s.first is not None else 0,
    }


class _Bar:
    def __init__(self, enabled: bool, total: int) -> None:
        self._p: Any = None
        if enabled:
            from rich.progress import Progress

            self._p = Progress(transient=True, console=console())
            self._p.start()
            self._t = self._p.add_task("exploring schedules", total=total)

    def __call__(self, done: int, total: int) -> None:
        if self._p is not None:
            self._p.update(self._t, completed=done)

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()


def run(args: argparse.Namespace) -> int:
    if args.replay:
        return _replay(args)
    cfg = _config(args)
    kinds = _kinds(args.inject, cfg.workload)
    if args.schedules < 1:
        raise InputError(f"--schedules {args.schedules}: must be at least 1")
    if args.audit_every < 1:
        raise InputError(f"--audit-every {args.audit_every}: must be at least 1")
    bar = _Bar(sys.stdout.isatty() and not args.json, args.schedules)
    try:
        s = explore(cfg, args.schedules, kinds=kinds, audit_every=args.audit_every, progress=bar)
    finally:
        bar.stop()
    saved = None
    if s.first is not None:
        saved = args.save or DEFAULT_SAVE
        Path(saved).write_text(schedule_text(cfg, s.first.schedule, s.points), encoding="utf-8")
    doc = _summary_doc(s, saved)
    if args.json:
        emit_json(doc)
    else:
        _print(doc)
    return int(doc["status"])


def _print(doc: dict[str, Any]) -> None:
    c = console()
    dis = ", ".join(doc["disabled"]) or "none"
    c.print(
        f"kpsim explore  workload {doc['workload']}, {doc['arch']}, series {doc['series']}, "
        f"{doc['machine']['cpus']} CPUs, disabled: {dis}"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in doc["points_by_kind"].items())
    c.print(f"points     {doc['points']} ({kinds})")
    levels = ", ".join(
        f"{v} with {k} injection{'s' if k != '1' else ''}"
        + (" (all)" if int(k) in doc["exhaustive_levels"] else " (sampled)")
        for k, v in doc["by_injections"].items()
    )
    c.print(f"schedules  {doc['explored']} explored: {levels}; {doc['schedules_per_second']:.0f}/s")
    for note in doc["notes"]:
        c.print(f"note       {note}", style="yellow")
    for found in doc["boot_findings"]:
        c.print(f"at boot    {found} (before any schedule: not held against one)", style="yellow")
    first = doc["first_violation"]
    if first is None:
        c.print("violations none", style="green")
        return
    c.print(f"violations {doc['violating']} schedules; the first (shortest) found:", style="red")
    for st in first["schedule"] or [{"point": "-", "at": "no injection", "inject": ""}]:
        c.print(f"  inject {st['inject'] or '-'} at point {st['point']} ({st['at']})")
    for v in first["violations"]:
        c.print(f"  {v['check']}: {v['detail']}")
    c.print(f"saved      {doc['saved']} (kpsim explore --replay {doc['saved']})")


def _replay(args: argparse.Namespace) -> int:
    path = Path(args.replay)
    text = read_input_text(path, "schedule")
    cfg, schedule = parse_schedule(text, str(path))
    ex = Explorer(cfg)
    points = ex.points()
    for n, (i, _) in enumerate(schedule):
        if i >= len(points):
            raise InputError(
                f"inject {i}: the workload reaches only {len(points)} points "
                f"(injection {n + 1} of {len(schedule)})",
                file=str(path),
            )
    out = ex.run(schedule, full_audit=True)
    doc = {
        "replay": str(path),
        "arch": cfg.machine.arch,
        "series": cfg.machine.series,
        "disabled": sorted(cfg.disabled),
        **_outcome_doc(out, points),
        "boot_findings": list(ex.boot_findings or ()),
        "status": 1 if out.violations else 0,
    }
    if args.json:
        emit_json(doc)
    else:
        c = console()
        dis = ", ".join(doc["disabled"]) or "none"
        c.print(f"kpsim explore --replay {path}: {cfg.machine.arch}, series "
                f"{cfg.machine.series}, disabled: {dis}")  # fmt: skip
        for st in doc["schedule"]:
            c.print(f"  inject {st['inject']} at point {st['point']} ({st['at']})")
        if not out.violations:
            c.print("violations none", style="green")
        for v in out.violations:
            c.print(f"  {v.check}: {v.detail}", style="red")
    return int(doc["status"])
