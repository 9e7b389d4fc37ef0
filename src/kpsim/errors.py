"""The kpsim error tree (DESIGN.md, "Errors").

One root, :class:`KpsimError`. Model failures also subclass the nearest builtin so
that callers who only know Python's tree still catch them. Architectural faults are
values (``kpsim.hw.arm64.fault.Fault``) that become :class:`AccessFault` only at the
access API.
"""

from __future__ import annotations

import os
from typing import Any


class KpsimError(Exception):
    """Root of every error kpsim raises on purpose."""


class InputError(KpsimError, ValueError):
    """Bad user input: a file, a line (when known) and the problem.

    The CLI prints ``str(err)`` as one line on stderr and exits with status 2.
    """

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return f"{where}{self.problem}"


class ConfigError(InputError):
    """An impossible machine or kernel configuration (zero memory, unknown policy...)."""


class OutOfMemory(KpsimError, MemoryError):
    """The simulated machine ran out of memory where the kernel would have failed hard."""


class VmFaultOom(OutOfMemory):
    """A user fault that returned ``VM_FAULT_OOM`` (``pagefault_out_of_memory``): the
    access did not complete; the process model records it and raises this."""

    errno = 12  # ENOMEM, what the operation that faulted reports


class ModelInvariantError(KpsimError, AssertionError):
    """A kernel ``BUG_ON``: the model reached a state Linux treats as fatal."""


class AccessFault(KpsimError):
    """An access made through the access API faulted; ``fault`` holds the value."""

    def __init__(self, fault: Any) -> None:
        self.fault = fault
        super().__init__(str(fault))


def last_line(text: str) -> int:
    """The number of the last line of ``text`` (1 for an empty text): where a problem
    with the whole document (a missing table, no records) or one found at its end
    (tomllib's "at end of document") is reported, so that every rejection names a line."""
    return text.count("\n", 0, len(text.rstrip("\n"))) + 1


def read_input_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of the user's input file at ``path``; ``what`` names the kind of
    file in the one-line :class:`InputError` for a file that cannot be read or is not
    UTF-8 ("cannot read scenario: ...", "FILE:N: scenario is not UTF-8 text (invalid
    start byte at column C)", at the line and column of the first bad byte)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise InputError(f"cannot read {what}: {err.strerror or err}", file=str(path)) from None
    try:  # newlines as a text-mode read gives them (universal newlines)
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        problem = f"{what} is not UTF-8 text ({err.reason} at column {column})"
        raise InputError(problem, file=str(path), line=line) from None
