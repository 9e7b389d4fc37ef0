"""Host storage for simulated RAM frames made in bulk (a simulator detail, no hardware).

:class:`~kpsim.hw.physmem.PhysicalMemory` stores each written 4 KiB frame as a numpy
array. Frames that a batched path materialises many at a time (the pages a run of user
faults allocates and clears) and the frames a TLB fill makes are rows of large zeroed
arenas instead: private anonymous host memory advised for transparent huge pages, so
the host takes one page fault per 2 MiB rather than one per frame (as QEMU backs guest
RAM). A frame is a frame: the rows are ordinary writable ``uint64[512]`` arrays, kept
alive by ``frames``.

Arenas are recycled. An arena whose frames have all died (its machine was collected)
goes back to a pool, up to :data:`POOL_ARENAS` of them, and a later arena is taken
from there, its rows zeroed as they are handed out. A first touch of fresh host memory
costs a host page fault, and on a virtual machine whose free memory the hypervisor
reclaims, a much dearer one (measured on the project's VM: 0.18 us per 4 KiB when the
huge page was recently freed, 6-8 us when it was not); zeroing a recycled row costs
a 4 KiB memset. Only arenas of the standard size are pooled.
"""

from __future__ import annotations

import contextlib
import mmap
import weakref
from typing import Any, Final

import numpy as np

ARENA_BYTES = 32 << 20
#: at most this many dead arenas are kept for reuse (1 GiB of host memory)
POOL_ARENAS: Final = 32
_ROW: Final = 4096
_POOL: list[mmap.mmap] = []


def _recycle(buf: mmap.mmap) -> None:
    """An arena's last frame died: keep its memory for the next arena (or let it go:
    the mapping goes when its last reference does; it cannot be closed here, the dying
    array's buffer export is released only after this callback)."""
    if len(_POOL) < POOL_ARENAS:
        _POOL.append(buf)


def pooled_arenas() -> int:
    """How many dead arenas wait for reuse (for tests and diagnostics)."""
    return len(_POOL)


class FrameArena:
    """Hands out zeroed ``uint64[n, 512]`` blocks carved from huge-page-advised arenas."""

    __slots__ = ("_dirty", "_left", "_rows")

    def __init__(self) -> None:
        self._rows: Any = None
        self._left = 0
        self._dirty = False  # the current arena was recycled: zero rows as they go out

    def take_one(self) -> Any:
        """One zeroed frame: a ``uint64[512]`` row (one view, not a block and a row)."""
        if not self._left:
            self._grow(1)
        row = self._rows[len(self._rows) - self._left]
        self._left -= 1
        if self._dirty:
            row[:] = 0
        return row

    def take(self, n: int) -> Any:
        """``n`` zeroed frames as the rows of one contiguous 2-D array."""
        if n > self._left:
            self._grow(n)
        start = len(self._rows) - self._left
        self._left -= n
        block = self._rows[start : start + n]
        if self._dirty:
            block[:] = 0
        return block

    def _grow(self, n: int) -> None:
        """A new arena for at least ``n`` frames (what was left of the old one is dropped):
        a pooled one when the standard size will do, else fresh host memory."""
        size = max(ARENA_BYTES, n * _ROW)
        buf = None
        while buf is None and _POOL and size == ARENA_BYTES:
            buf = _POOL.pop()
            if len(buf) != size:  # pooled under another standard size: let it go
                buf = None
        self._dirty = buf is not None
        if buf is None:
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            advise = getattr(mmap, "MADV_HUGEPAGE", None)
            if advise is not None:
                with contextlib.suppress(OSError):  # no THP on this host: ordinary pages
                    buf.madvise(advise)
        flat = np.frombuffer(buf, dtype=np.uint64)  # every row's base: alive while any is
        if size == ARENA_BYTES:
            weakref.finalize(flat, _recycle, buf).atexit = False
        self._rows = flat.reshape(-1, _ROW // 8)
        self._left = size // _ROW
