"""Machine options shared by every verb that boots a machine (written once, here).

``--arch arm64|x86``, ``--memory SIZE``, ``--cpus N``, ``--no-poe``,
``--linear-map pte|block``, ``--seed N``, ``--hardened-pgtables/--no-hardened-pgtables``,
``--allocator NAME``, ``--batching/--no-batching``, ``--allow-unsafe-split``,
``--series NAME``;
:func:`boot_from_args` turns them into a booted :class:`~kpsim.machine.boot.Machine`.
Validation is the ``MachineConfig``'s: a bad value is a ``ConfigError``, which
``kpsim`` reports on one line with exit status 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.cli.arch_opts import add_arch_option
from kpsim.cli.common import int_arg, on_terminal, progress_bar, warn_unsafe
from kpsim.machine.boot import Machine
from kpsim.machine.config import ALLOCATORS, MachineConfig
from kpsim.mm.fault_inject import SITES as FAULT_SITES
from kpsim.mm.kpkeys_series import DEFAULT_SERIES, SERIES_NAMES


def add_machine_options(p: argparse.ArgumentParser, *, scenario: bool = False) -> None:
    """The machine options. ``scenario``: the verb reads the machine from a scenario
    (``kpsim run``), so the help shows no built-in defaults: an option given overrides
    the scenario's field, one not given leaves it."""

    def dflt(text: str) -> str:
        return "(default: the scenario's)" if scenario else f"(default {text})"

    g = p.add_argument_group("machine")
    add_arch_option(g, scenario=scenario)
    g.add_argument("--memory", default="4G", metavar="SIZE", help=f"RAM size {dflt('4G')}")
    g.add_argument("--cpus", type=int_arg, default=2, metavar="N", help=f"CPUs {dflt('2')}")
    g.add_argument("--no-poe", dest="poe", action="store_false", help="CPUs without FEAT_S1POE")
    g.add_argument(
        "--linear-map",
        default=None,
        metavar="pte|block",
        help="linear map policy "
        + dflt("pte on arm64, block on x86").replace("(default ", "(default: "),
    )
    g.add_argument("--seed", type=int_arg, default=0, metavar="N", help=f"random seed {dflt('0')}")
    g.add_argument(
        "--hardened-pgtables",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"kpkeys_hardened_pgtables {dflt('on')}",
    )
    g.add_argument(
        "--allocator",
        default=None,
        metavar="|".join(ALLOCATORS),
        help="kpkeys table allocator "
        + dflt("minimal on pte maps, pba on block maps").replace("(default ", "(default: "),
    )
    g.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"lazy-MMU batching of guarded writes {dflt('on')}",
    )
    g.add_argument(
        "--series",
        default=DEFAULT_SERIES,
        metavar="|".join(SERIES_NAMES),
        help="which posting of the kpkeys series to follow: kpkeys API, allocator, batching "
        f"and exception-return behaviour {dflt(DEFAULT_SERIES)}",
    )
    g.add_argument(
        "--allow-unsafe-split",
        action="store_true",
        help="allow the minimal or grouped allocator on a block-mapped linear map",
    )
    add_fault_options(p)


def add_fault_options(p: argparse.ArgumentParser) -> None:
    """``--fail-<site> SPEC``: fault injection (:mod:`kpsim.mm.fault_inject`)."""
    g = p.add_argument_group(
        "fault injection",
        "SPEC is Linux's boot syntax INTERVAL,PROBABILITY,SPACE,TIMES (e.g. 1,10,0,-1) or "
        "KEY=VALUE pairs (probability=10,interval=1,times=-1,space=0,verbose=1; page "
        "allocator also min_order, ignore_gfp_reclaim, ignore_gfp_highmem; set_memory_pkey "
        "also unkey=1). Draws are seeded from --seed.",
    )
    for site in FAULT_SITES:
        g.add_argument(
            "--fail-" + site.replace("_", "-"),
            dest=f"fail_{site}",
            default=None,
            metavar="SPEC",
            help=f"make {FAULT_HELP[site]} fail",
        )


FAULT_HELP = {
    "page_alloc": "alloc_pages() (fail_page_alloc)",
    "pagetable_alloc": "pagetable_alloc()",
    "set_memory_pkey": "set_memory_pkey() with -ENOMEM",
    "split": "linear-map splits (split_kernel_leaf_mapping) with -ENOMEM",
    "pba_refill": "the block allocator's refills",
}


def fault_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``fail_<site>`` options given (for ``MachineConfig``)."""
    out = {}
    for site in FAULT_SITES:
        v = getattr(args, f"fail_{site}", None)
        if v is not None:
            out[f"fail_{site}"] = v
    return out


def config_from_args(args: argparse.Namespace) -> MachineConfig:
    """A validated ``MachineConfig`` (``ConfigError``/``InputError`` on a bad value);
    an unsafe one (``MachineConfig.unsafe``) is warned about on stderr."""
    cfg = MachineConfig(
        memory=args.memory,
        cpus=args.cpus,
        poe=args.poe,
        linear_map=args.linear_map or "",
        arch=getattr(args, "arch", None) or "arm64",
        hardened_pgtables=args.hardened_pgtables,
        allocator=args.allocator,
        batching=args.batching,
        allow_unsafe_split=args.allow_unsafe_split,
        series=args.series,
        seed=args.seed,
        **fault_options(args),  # type: ignore[arg-type]
    )
    warn_unsafe(cfg, getattr(args, "verb", None) or "")
    return cfg


def boot_from_args(args: argparse.Namespace, **kwargs: Any) -> Machine:
    """Boot the machine the options describe, with a progress bar on a terminal."""
    return boot_config(config_from_args(args), on_terminal(args), **kwargs)


def boot_config(cfg: MachineConfig, progress: bool, **kwargs: Any) -> Machine:
    """``Machine.boot(cfg)``, showing its steps on ``kpsim run``'s bar if ``progress``."""
    with progress_bar(progress) as bar:
        return Machine.boot(cfg, progress=bar, **kwargs)
