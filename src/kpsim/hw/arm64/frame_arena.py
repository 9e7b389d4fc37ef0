"""Host storage for simulated RAM frames made in bulk (a simulator detail, no hardware).

:class:`~kpsim.hw.physmem.PhysicalMemory` stores each written 4 KiB frame as a numpy
array. Frames that a batched path materialises many at a time (the pages a run of user
faults allocates and clears) are rows of large zeroed arenas instead: private anonymous
host memory advised for transparent huge pages, so the host takes one page fault per
2 MiB rather than one per frame (as QEMU backs guest RAM). A frame is a frame: the
rows are ordinary writable ``uint64[512]`` arrays, kept alive by ``frames``.
"""

from __future__ import annotations

import contextlib
import mmap
from typing import Any

import numpy as np

ARENA_BYTES = 32 << 20
_ROW = 4096


class FrameArena:
    """Hands out zeroed ``uint64[n, 512]`` blocks carved from huge-page-advised arenas."""

    __slots__ = ("_left", "_rows")

    def __init__(self) -> None:
        self._rows: Any = None
        self._left = 0

    def take_one(self) -> Any:
        """One zeroed frame: a ``uint64[512]`` row (one view, not a block and a row)."""
        if not self._left:
            self._grow(1)
        row = self._rows[len(self._rows) - self._left]
        self._left -= 1
        return row

    def take(self, n: int) -> Any:
        """``n`` zeroed frames as the rows of one contiguous 2-D array."""
        if n > self._left:
            self._grow(n)
        start = len(self._rows) - self._left
        self._left -= n
        return self._rows[start : start + n]

    def _grow(self, n: int) -> None:
        """A new arena for at least ``n`` frames (what was left of the old one is dropped)."""
        size = max(ARENA_BYTES, n * _ROW)
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        advise = getattr(mmap, "MADV_HUGEPAGE", None)
        if advise is not None:
            with contextlib.suppress(OSError):  # no THP on this host: ordinary pages
                buf.madvise(advise)
        self._rows = np.frombuffer(buf, dtype=np.uint64).reshape(-1, _ROW // 8)
        self._left = size // _ROW
