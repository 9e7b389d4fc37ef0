"""Sparse physical memory made of 4 KiB frames.

Models DRAM as seen by the CPUs and the table walker: 64-bit little-endian word
loads and stores, narrower stores, and whole-frame (table) views for vectorised
kernel paths. Only frames ever written hold storage; every other frame reads as
zero, so a 1 TiB machine costs nothing until touched.

Left out: caches and memory ordering (every store is immediately visible to every
observer, as if all accesses were to coherent, sequentially consistent memory).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from kpsim.errors import ConfigError, KpsimError
from kpsim.units import PAGE_SHIFT, PAGE_SIZE, PhysAddr

WORDS_PER_FRAME: Final = PAGE_SIZE // 8
Frame = npt.NDArray[np.uint64]

_ZERO: Final = np.zeros(WORDS_PER_FRAME, dtype=np.uint64)
_ZERO.setflags(write=False)


class ExternalAbort(KpsimError):
    """An access to a physical address with no memory behind it (SError/external abort)."""


class PhysicalMemory:
    """DRAM between ``base`` and ``base + size``; frames materialise on first write."""

    __slots__ = ("base", "end", "frames", "size")

    def __init__(self, base: int, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE or base % PAGE_SIZE:
            raise ConfigError(f"memory must be a positive multiple of 4K at a 4K base: {size:#x}")
        self.base = base
        self.size = size
        self.end = base + size
        self.frames: dict[int, Frame] = {}

    # -- frames ----------------------------------------------------------------
    def check(self, pa: int) -> None:
        if not self.base <= pa < self.end:
            raise ExternalAbort(f"physical address {pa:#x} is outside DRAM")

    def frame(self, pfn: int) -> Frame:
        """The writable word array of frame ``pfn``, materialising it if needed."""
        f = self.frames.get(pfn)
        if f is None:
            self.check(pfn << PAGE_SHIFT)
            f = np.zeros(WORDS_PER_FRAME, dtype=np.uint64)
            self.frames[pfn] = f
        return f

    def frame_ro(self, pfn: int) -> Frame:
        """A read-only view of frame ``pfn`` (a shared zero frame if never written)."""
        f = self.frames.get(pfn)
        return _ZERO if f is None else f

    def zero_frame(self, pfn: int) -> None:
        """Clear a frame in place (TLB entries may hold a reference to its array)."""
        f = self.frames.get(pfn)
        if f is not None:
            f[:] = 0

    def resident_frames(self) -> int:
        return len(self.frames)

    # -- word access -----------------------------------------------------------
    def read64(self, pa: int) -> int:
        f = self.frames.get(pa >> PAGE_SHIFT)
        if f is None:
            self.check(pa)
            return 0
        v: int = f.item((pa & (PAGE_SIZE - 1)) >> 3)  # a Python int (no numpy scalar)
        return v

    def write64(self, pa: int, value: int) -> None:
        self.frame(pa >> PAGE_SHIFT)[(pa & (PAGE_SIZE - 1)) >> 3] = value

    def read(self, pa: int, size: int) -> int:
        """Little-endian load of ``size`` bytes (1, 2, 4 or 8), naturally aligned."""
        if size == 8:
            return self.read64(pa)
        word = self.read64(pa & ~7)
        shift = (pa & 7) * 8
        return (word >> shift) & ((1 << (size * 8)) - 1)

    def write(self, pa: int, value: int, size: int) -> None:
        """Little-endian store of ``size`` bytes (1, 2, 4 or 8), naturally aligned."""
        if size == 8:
            self.write64(pa, value)
            return
        f = self.frame(pa >> PAGE_SHIFT)
        f.view(np.uint8)[pa & (PAGE_SIZE - 1) : (pa & (PAGE_SIZE - 1)) + size] = np.frombuffer(
            value.to_bytes(size, "little"), dtype=np.uint8
        )

    def read_bytes(self, pa: PhysAddr, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            off = pa & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - off)
            out += self.frame_ro(pa >> PAGE_SHIFT).view(np.uint8)[off : off + take].tobytes()
            pa = PhysAddr(pa + take)
            n -= take
        return bytes(out)
