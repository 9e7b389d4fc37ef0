"""Units, sizes and address types shared by every layer.

Physical and virtual addresses are distinct ``NewType``s so that a physical address
is never passed where a virtual one is expected (DESIGN.md, "Conventions").
"""

from __future__ import annotations

import re
from typing import NewType

from kpsim.errors import InputError

PhysAddr = NewType("PhysAddr", int)
VirtAddr = NewType("VirtAddr", int)
Pfn = NewType("Pfn", int)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
PTRS_PER_TABLE = 512

SZ_4K = 1 << 12
SZ_64K = 1 << 16
SZ_2M = 1 << 21
SZ_32M = 1 << 25
SZ_1G = 1 << 30
SZ_512G = 1 << 39

U64_MASK = (1 << 64) - 1

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse ``4G``, ``512M``, ``4096``, ``0x1000`` (and ``2MiB``) into bytes.

    Raises :class:`InputError` with a one-line message on anything else.
    """
    if isinstance(text, bool):
        raise InputError(f"{what}: expected a size, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise InputError(f"{what}: size must not be negative, got {text}")
        return text
    s = str(text).strip()
    if s.startswith("-"):
        raise InputError(f"{what}: size must not be negative, got {text!r}")
    if s.lower().startswith("0x"):
        try:
            return int(s, 16)
        except ValueError:
            raise InputError(f"{what}: not a hex number: {text!r}") from None
    m = _SIZE_RE.match(s)
    if m is None:
        raise InputError(f"{what}: not a size: {text!r} (use e.g. 4G, 512M, 4096 or 0x1000)")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def parse_u64(text: str, *, what: str = "value") -> int:
    """Parse a 64-bit value written in hex (``0x...``), decimal or binary (``0b...``)."""
    s = text.strip().replace("_", "")
    try:
        value = int(s, 0)
    except ValueError:
        try:
            value = int(s, 16)  # crash reports often print hex without 0x
        except ValueError:
            raise InputError(f"{what}: not a number: {text!r}") from None
    if not 0 <= value <= U64_MASK:
        raise InputError(f"{what}: {text!r} is outside the 64-bit range")
    return value


def format_size(nbytes: int) -> str:
    """Format a byte count the way ptdump does: ``4K``, ``2M``, ``1G``..."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return f"{nbytes}B"
