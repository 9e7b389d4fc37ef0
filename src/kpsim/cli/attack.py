"""``kpsim attack``: boot a machine and run an attack campaign against its page tables
(a data-only arbitrary-write attacker, the series' threat model). Exit 1 if a write in
the threat model landed while kpkeys_hardened_pgtables was on; 2 on bad options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kpsim.cli.common import add_json, console, emit_json, int_arg, on_terminal, progress_bar
from kpsim.cli.machine_opts import add_machine_options
from kpsim.cli.machine_opts import config_from_args as machine_config_from_args

if TYPE_CHECKING:
    from kpsim.attack.config import AttackConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from kpsim.attack.config import (
        DEFAULT_ATTEMPTS,
        DEFAULT_RANDOM_ATTEMPTS,
        EXTRA_TARGETS,
        TARGETS,
        TIMINGS,
    )

    p = sub.add_parser(
        "attack",
        help="attack the page tables with a data-only write primitive",
        description="Aim a 64-bit kernel write (the series' threat model) at page-table "
        "entries from one CPU at several moments, and report per target class how many "
        "writes the pkey hardware blocked (arm64: the permission overlay, POE; x86: a "
        "protection-key #PF, PKS) and how many landed (docs/attack.md). Exit "
        "status 1 if an in-threat-model write landed with kpkeys_hardened_pgtables on.",
    )
    add_machine_options(p)
    g = p.add_argument_group("attack")
    g.add_argument(
        "--targets",
        default="all",
        metavar="LIST",
        help=(
            f"comma list of {', '.join(TARGETS)} (default all: these), "
            f"or {', '.join(EXTRA_TARGETS)}"
        ),
    )
    g.add_argument(
        "--timing",
        default="all",
        metavar="LIST",
        help=f"comma list of {', '.join(TIMINGS)} (default all)",
    )
    g.add_argument(
        "--attempts",
        type=int_arg,
        default=DEFAULT_ATTEMPTS,
        metavar="N",
        help=f"writes per target class and timing (default {DEFAULT_ATTEMPTS})",
    )
    g.add_argument(
        "--random-attempts",
        type=int_arg,
        default=DEFAULT_RANDOM_ATTEMPTS,
        metavar="N",
        help=f"random-address writes per timing (default {DEFAULT_RANDOM_ATTEMPTS})",
    )
    g.add_argument(
        "--attacker-cpu",
        type=int_arg,
        default=0,
        metavar="N",
        help="the CPU the attacker writes from (default 0)",
    )
    add_json(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AttackConfig:
    """A validated ``AttackConfig`` (``InputError`` naming the option if bad)."""
    from kpsim.attack.config import config_from_options

    return config_from_options(
        targets=args.targets,
        timings=args.timing,
        attempts=args.attempts,
        random_attempts=args.random_attempts,
        cpu=args.attacker_cpu,
        ncpus=args.cpus,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from kpsim.attack import run_attack
    from kpsim.machine.boot import Machine

    machine_config = machine_config_from_args(args)  # first: --cpus 0 is about --cpus
    config = config_from_args(args)
    with progress_bar(on_terminal(args)) as bar:
        m = Machine.boot(machine_config, progress=bar)
        if bar is not None:
            bar(3, 4, "attack campaign")
        report = run_attack(m, config)
    doc = report.as_json()
    if args.json:
        emit_json(doc)
    else:
        _print(doc)
    return report.exit_status


def _print(doc: dict[str, object]) -> None:
    c = console()
    cfg = doc["machine"]
    att = doc["attack"]
    assert isinstance(cfg, dict) and isinstance(att, dict)
    x86 = cfg.get("arch") == "x86"
    where = "x86, direct map" if x86 else "linear map"
    c.print(
        f"kpsim attack: {where} {cfg['linear_map']}, allocator {cfg['allocator']}, "
        f"{'PKS' if x86 else 'POE'} {'on' if cfg['poe'] else 'off'}, feature "
        f"{'on' if doc['feature_on'] else 'off'}; "
        f"attacker on cpu{att['attacker_cpu']}, seed {att['seed']}"
    )
    for title, key in (
        ("in the threat model", "targets"),
        (
            "outside the threat model (attacker's own CPU inside a guard or "
            "batched section: not a defence)",
            "outside_threat_model",
        ),
    ):
        rows = doc[key]
        assert isinstance(rows, list)
        if not rows:
            continue
        c.print(f"\n{title}:")
        c.print(f"  {'class':12} {'attempts':>8} {'blocked':>8} {'landed':>7}  gains / other")
        for r in rows:
            extra = {k: v for k, v in r.items() if k in ("hit_page_tables", "tables_unkeyed")}
            notes = ", ".join(
                f"{k}={v}" for k, v in {**r["gains"], **r["other_outcomes"], **extra}.items()
            )
            c.print(
                f"  {r['class']:12} {r['attempts']:>8} {r['blocked']:>8} {r['landed']:>7}  {notes}"
            )
    for s in doc["skipped"]:  # type: ignore[attr-defined]
        c.print(f"skipped: {s['class']} at {s['timing']}: {s['reason']}")
    for n in doc["notes"]:  # type: ignore[attr-defined]
        c.print(f"note: {n}")
    landed = doc["landed_in_threat_model"]
    if not landed:
        verdict = "every in-threat-model page-table write was blocked"
    elif doc["feature_on"]:
        verdict = f"{landed} in-threat-model write(s) landed with the feature on"
    else:
        verdict = f"{landed} in-threat-model write(s) landed (feature off: negative control)"
    c.print(f"\nverdict: {verdict}")
    tried = {r["class"] for r in doc["targets"]}  # type: ignore[attr-defined]
    if doc["feature_on"] and "kimage_alias" not in tried and not x86:
        c.print(
            "(of the classes tried; --targets kimage_alias, left out of 'all', shows a known "
            "gap: docs/attack.md)"
        )
