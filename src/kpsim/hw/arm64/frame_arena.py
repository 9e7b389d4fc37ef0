"""Host storage for simulated RAM frames made in bulk (a simulator detail, no hardware).

:class:`~kpsim.hw.physmem.PhysicalMemory` stores each written 4 KiB frame as a numpy
array. Frames that a batched path materialises many at a time (the pages a run of user
faults allocates and clears) and the frames a TLB fill makes are rows of large arenas
of private anonymous host memory instead. A frame is a frame: the rows are ordinary
writable ``uint64[512]`` arrays, kept alive by ``frames``.

Host memory is spent only on rows that are written. A fresh arena is untouched
host memory, which reads as zero and costs nothing until written; ``clear_page`` of a
frame whose row was just handed out writes nothing (the row is already zero), so a
populated but never written user page costs a Python view, not 4 KiB. The arenas are
advised ``MADV_NOHUGEPAGE``: with transparent huge pages the first write to any row (a
page table is written among the zero pages a populate clears) would make the whole
2 MiB around it resident, and a populated 1 GiB region would cost 1 GiB of host memory.

Arenas are recycled. An arena whose frames have all died (its machine was collected)
goes back to a pool, up to :data:`POOL_ARENAS` of them, and a later arena is taken
from there. A first write to fresh host memory costs a host page fault (on a virtual
machine whose free memory the hypervisor reclaims, a dear one: several microseconds
per 4 KiB on the project's VM), a reused row a 4 KiB memset. Only the rows that were
resident when the arena died are zeroed as they are handed out (``mincore(2)``, where
the host has it; elsewhere every reused row is zeroed); the others still read zero and
stay free. Only arenas of the standard size are pooled.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import weakref
from typing import Any, Final

import numpy as np

ARENA_BYTES = 32 << 20
#: at most this many dead arenas are kept for reuse (1 GiB of host memory at most)
POOL_ARENAS: Final = 32
_ROW: Final = 4096
#: pooled arenas, each with its rows that must be zeroed before reuse (bool per row)
_POOL: list[tuple[mmap.mmap, Any]] = []


def _mincore() -> Any:
    """libc's ``mincore`` (None where there is none: every reused row is then zeroed)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_MINCORE: Final = _mincore()


def resident_rows(buf: mmap.mmap) -> Any:
    """Which rows of ``buf`` hold host memory (bool per 4 KiB row; all True when the
    host cannot say): the rows that may have been written."""
    rows = len(buf) // _ROW
    if _MINCORE is None:
        return np.ones(rows, dtype=bool)
    host_page = mmap.PAGESIZE
    flat = np.frombuffer(buf, dtype=np.uint8)
    vec = np.zeros((len(buf) + host_page - 1) // host_page, dtype=np.uint8)
    rc = _MINCORE(flat.ctypes.data, len(buf), vec.ctypes.data)
    del flat
    if rc != 0:
        return np.ones(rows, dtype=bool)
    mask = (vec & 1).astype(bool)
    if host_page == _ROW:
        return mask
    return mask[(np.arange(rows, dtype=np.int64) * _ROW) // host_page]


def _recycle(buf: mmap.mmap) -> None:
    """An arena's last frame died: keep its memory for the next arena (or let it go:
    the mapping goes when its last reference does; it cannot be closed here, the dying
    array's buffer export is released only after this callback)."""
    if len(_POOL) < POOL_ARENAS:
        _POOL.append((buf, resident_rows(buf)))


def pooled_arenas() -> int:
    """How many dead arenas wait for reuse (for tests and diagnostics)."""
    return len(_POOL)


class FrameArena:
    """Hands out zeroed ``uint64[n, 512]`` blocks carved from arenas of host memory."""

    __slots__ = ("_dirty", "_dirty_bytes", "_left", "_rows")

    def __init__(self) -> None:
        self._rows: Any = None
        self._left = 0
        #: the current arena was recycled: its rows that were resident (None: fresh)
        self._dirty: Any = None
        #: the same, one byte per row (what :meth:`take_one` reads)
        self._dirty_bytes = b""

    def take_one(self) -> Any:
        """One zeroed frame: a ``uint64[512]`` row (one view, not a block and a row)."""
        if not self._left:
            self._grow(1)
        i = len(self._rows) - self._left
        row = self._rows[i]
        self._left -= 1
        if self._dirty is not None and self._dirty_bytes[i]:
            row[:] = 0
        return row

    def take(self, n: int) -> Any:
        """``n`` zeroed frames as the rows of one contiguous 2-D array."""
        if n > self._left:
            self._grow(n)
        start = len(self._rows) - self._left
        self._left -= n
        block = self._rows[start : start + n]
        if self._dirty is not None:
            dirty = self._dirty[start : start + n]
            if dirty.all():
                block[:] = 0
            elif dirty.any():
                block[dirty] = 0
        return block

    def _grow(self, n: int) -> None:
        """A new arena for at least ``n`` frames (what was left of the old one is dropped):
        a pooled one when the standard size will do, else fresh host memory."""
        size = max(ARENA_BYTES, n * _ROW)
        buf = None
        dirty = None
        while buf is None and _POOL and size == ARENA_BYTES:
            buf, dirty = _POOL.pop()
            if len(buf) != size:  # pooled under another standard size: let it go
                buf = None
        if buf is None:
            dirty = None
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            advise = getattr(mmap, "MADV_NOHUGEPAGE", None)
            if advise is not None:
                with contextlib.suppress(OSError):  # no THP on this host: nothing to say
                    buf.madvise(advise)
        self._dirty = dirty if dirty is not None and dirty.any() else None
        self._dirty_bytes = b"" if self._dirty is None else self._dirty.tobytes()
        flat = np.frombuffer(buf, dtype=np.uint64)  # every row's base: alive while any is
        if size == ARENA_BYTES:
            weakref.finalize(flat, _recycle, buf).atexit = False
        self._rows = flat.reshape(-1, _ROW // 8)
        self._left = size // _ROW


#: the arena every CPU and TLB of the process takes frames from
ARENA: Final = FrameArena()
