"""Options and output helpers shared by every verb."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def console() -> Console:
    """A rich console on stdout (plain text when piped)."""
    return Console(highlight=False, soft_wrap=True)


def int_arg(text: str) -> int:
    """argparse type for a number written in decimal or hex."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
