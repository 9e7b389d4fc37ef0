"""What ``kpsim conform`` and ``kpsim snapshot`` share: exit codes and the one-line
failure they print (no verb here: this module has no ``register``)."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


def fail(verb: str, line: str) -> int:
    """Print ``kpsim VERB: LINE`` on stderr; return the usage exit status (2)."""
    sys.stderr.write(f"kpsim {verb}: {line}\n")
    return EXIT_USAGE
