"""``--arch arm64|x86``: the one definition every verb shares (issue 18, item 4).

:func:`add_arch_option` adds the option (machine verbs get it through
:func:`kpsim.cli.machine_opts.add_machine_options`; the verbs that boot no machine of
their own, ``conform``, ``reproduce``, ``sweep`` and ``decode``, call it directly). The
option's default is None: a scenario's ``[machine] arch`` then decides, else ``arm64``.
The verbs without it take no architecture: ``compare`` runs both, ``report`` draws
documents that name theirs, ``record`` and ``snapshot`` read this host.

Where a verb cannot work on x86 yet, :data:`X86_GAPS` says in one line what x86
lacks, and :func:`check_arch` (called by ``kpsim`` before the verb runs, and by the
verbs that read the architecture from a scenario) turns that into an ``InputError``:
one line on stderr, exit status 2. A verb absent from the table runs on x86.
"""

from __future__ import annotations

import argparse
from typing import Any

from kpsim.errors import InputError
from kpsim.machine.config import ARCHES

DEFAULT_ARCH = "arm64"

#: What each verb lacks on x86, one line each (a verb not named here works on x86).
X86_GAPS: dict[str, str] = {}


def add_arch_option(p: Any, *, scenario: bool = False) -> None:
    """``--arch arm64|x86`` on ``p`` (a parser or an argument group). ``scenario``:
    the verb reads a scenario, whose ``[machine] arch`` applies without the option."""
    where = "the scenario's, else arm64" if scenario else "arm64"
    p.add_argument(
        "--arch",
        choices=ARCHES,
        default=None,
        help=f"the simulated architecture: arm64 (POE) or x86 (PKS) (default: {where})",
    )


def effective_arch(args: argparse.Namespace, scenario_arch: str | None = None) -> str:
    """The architecture a verb runs: ``--arch``, else the scenario's, else arm64."""
    given = getattr(args, "arch", None)
    return given or scenario_arch or DEFAULT_ARCH


def check_arch(verb: str, arch: str | None) -> None:
    """Refuse ``arch`` for ``verb`` if the verb cannot run there (``InputError``)."""
    if arch is None or arch == DEFAULT_ARCH:
        return
    if arch not in ARCHES:
        raise InputError(f"--arch: unknown architecture {arch!r} (use {' or '.join(ARCHES)})")
    gap = X86_GAPS.get(verb)
    if gap is not None:
        raise InputError(f"--arch {arch}: not available for `kpsim {verb}` yet: {gap}")
