"""Options and output helpers shared by every verb."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from kpsim.errors import InputError


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


class _Console(Console):
    """rich's console, but a closed pipe (``kpsim ... | head -1``) is not exit status 1:
    rich's default exits 1 ("found something"); this raises ``BrokenPipeError``, which
    ``kpsim`` turns into exit status 0 (:func:`kpsim.cli.main.main`)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console() -> Console:
    """A rich console on stdout (plain text when piped)."""
    return _Console(highlight=False, soft_wrap=True)


def int_arg(text: str) -> int:
    """argparse type for a number written in decimal or hex."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def check_writable(path: str | Path, what: str) -> None:
    """Refuse an output file that cannot be written, before anything runs (an
    ``InputError`` naming the file: exit status 2). Leaves no file behind."""
    p = Path(path)
    try:
        existed = p.exists()
        with p.open("a", encoding="utf-8"):
            pass
    except OSError as err:
        raise InputError(f"cannot write {what}: {err.strerror or err}", file=str(p)) from None
    if not existed:
        p.unlink()


def plural(n: int, noun: str, suffix: str = "es") -> str:
    """``1 process``, ``2 processes`` (``suffix`` for other nouns: ``"s"``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{suffix}"


def warn_unsafe(cfg: Any, verb: str) -> None:
    """One warning line on stderr when ``cfg`` (a MachineConfig) is an unsafe one."""
    reason = cfg.unsafe
    if reason is not None:
        sys.stderr.write(f"kpsim {verb}: WARNING: {reason}\n")


def progress_bar(enabled: bool) -> Any:
    """``kpsim run``'s progress bar (a context manager whose value is the callback
    ``(done, total, label)``, or None when disabled): on a terminal only, so callers
    pass ``sys.stdout.isatty() and not args.json``."""
    from kpsim.cli.run import _Progress

    return _Progress(enabled)


def on_terminal(args: Any) -> bool:
    """Progress is shown only on a terminal, and never with ``--json``."""
    return sys.stdout.isatty() and not getattr(args, "json", False)
