"""``kpsim``: one command with verbs (DESIGN.md, "User-facing conventions").

Exit status: 0 success; 1 the run found something; 2 bad usage or bad input
(one line on stderr, never a traceback); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from kpsim.cli.arch_opts import check_arch
from kpsim.errors import InputError, OutOfMemory
from kpsim.mm.mm_types import SyscallError

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


def _one_line(text: str) -> str:
    """A value may hold a newline or other control characters: shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ``--memory -1G`` is a (bad) value, not an unknown option: argparse only takes
        # plain negative numbers for values, so widen its test to sizes (no option of
        # kpsim's looks like ``-1...``).
        self._negative_number_matcher = re.compile(r"^-\d[0-9A-Za-z_.]*$")

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {_one_line(message)}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="kpsim",
        description="Executable model of Linux's pkeys-based page-table hardening on arm64.",
    )
    parser.add_argument("--version", action="version", version=f"kpsim {version()}")
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


def version() -> str:
    """The installed distribution's version (``kpsim.__version__`` from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("kpsim")
    except PackageNotFoundError:
        from kpsim import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    prog = "kpsim" if args.verb is None else f"kpsim {args.verb}"
    if extra:  # named by the verb whose options they are not
        words = _one_line(" ".join(extra))
        sys.stderr.write(f"{prog}: error: unrecognized arguments: {words}\n")
        return EXIT_USAGE
    if args.verb is None:
        sys.stderr.write("kpsim: error: no VERB given (kpsim --help lists them)\n")
        return EXIT_USAGE
    try:
        check_arch(args.verb, getattr(args, "arch", None))
        status: int = args.func(args)
    except InputError as err:
        sys.stderr.write(f"kpsim {args.verb}: {_one_line(str(err))}\n")
        return EXIT_USAGE
    except (OutOfMemory, SyscallError) as err:  # verbs that expect it say which option to change
        if isinstance(err, SyscallError) and err.errno != errno.ENOMEM:
            raise  # a refused call no verb expected: a bug, with its traceback
        what = _one_line(str(err))
        if any(k.startswith("fail_") and v is not None for k, v in vars(args).items()):
            sys.stderr.write(  # e.g. kpsim pba --fail-pagetable-alloc: pba stops at one
                f"kpsim {args.verb}: an injected allocation failure stopped it ({what}); "
                "kpsim run, audit and explore go on past injected failures\n"
            )
        else:
            sys.stderr.write(
                f"kpsim {args.verb}: the simulated machine ran out of memory ({what}); "
                "use more --memory or a smaller workload\n"
            )
        return EXIT_USAGE
    except MemoryError:  # the host's, not the simulated machine's (OutOfMemory above)
        sys.stderr.write(
            f"kpsim {args.verb}: this host ran out of memory running the model; "
            "use a smaller --memory or workload\n"
        )
        return EXIT_USAGE
    except BrokenPipeError:  # ``kpsim ... | head``: stop quietly
        _stdout_to_devnull()
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C: no traceback, no result, the shell's status
        sys.stderr.write(f"kpsim {args.verb}: interrupted\n")
        return EXIT_INTERRUPTED
    return status


def _stdout_to_devnull() -> None:
    """After a closed pipe, point stdout at /dev/null so that the interpreter's final
    flush does not fail again (Python's documented SIGPIPE recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (tests capture it)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
