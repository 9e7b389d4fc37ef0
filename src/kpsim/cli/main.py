"""``kpsim``: one command with verbs (DESIGN.md, "User-facing conventions").

Exit status: 0 success; 1 the run found something; 2 bad usage or bad input
(one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from kpsim.errors import InputError

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="kpsim",
        description="Executable model of Linux's pkeys-based page-table hardening on arm64.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=ArgumentParser)
    import kpsim.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in {"main", "common"}:
            continue
        mod = importlib.import_module(f"kpsim.cli.{info.name}")
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        status: int = args.func(args)
    except InputError as err:
        sys.stderr.write(f"kpsim {args.verb}: {err}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    return status


if __name__ == "__main__":
    raise SystemExit(main())
