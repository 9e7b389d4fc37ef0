"""Sparse physical memory: frames materialise on first write; little-endian access."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpsim.errors import ConfigError
from kpsim.hw.physmem import ExternalAbort, PhysicalMemory

TIB = 1 << 40


def test_a_huge_machine_allocates_nothing_until_written():
    """A 1 TiB machine holds no frames; reads anywhere return zero and allocate nothing."""
    mem = PhysicalMemory(0, TIB)
    for pa in (0, 0x1234_5000, TIB - 8, TIB // 2 + 0x808):
        assert mem.read64(pa) == 0
        assert mem.read(pa, 2) == 0
    assert mem.read_bytes(TIB - 0x1800, 0x1800) == bytes(0x1800)
    assert mem.frame_ro((TIB >> 12) - 1).sum() == 0
    assert mem.resident_frames() == 0


def test_one_write_materialises_one_frame():
    """Writing one word of a 1 TiB machine allocates exactly one 4 KiB frame."""
    mem = PhysicalMemory(0, TIB)
    mem.write64(TIB - 8, 0xDEAD_BEEF)
    assert mem.resident_frames() == 1
    assert mem.read64(TIB - 8) == 0xDEAD_BEEF
    mem.write(TIB - 16, 0x7, 1)
    assert mem.resident_frames() == 1
    mem.write(0, 1, 2)
    assert mem.resident_frames() == 2


def test_narrow_stores_are_little_endian():
    """Byte and halfword stores land in the word's low-addressed bytes first."""
    mem = PhysicalMemory(0x4000_0000, 1 << 20)
    pa = 0x4000_0008
    mem.write(pa, 0x1234, 2)
    assert mem.read64(pa) == 0x1234
    mem.write(pa + 1, 0xAB, 1)
    assert mem.read64(pa) == 0xAB34
    mem.write(pa + 6, 0xCDEF, 2)
    assert mem.read64(pa) == 0xCDEF_0000_0000_AB34
    mem.write(pa + 4, 0x0102_0304, 4)
    assert mem.read64(pa) == 0x0102_0304_0000_AB34
    assert mem.read_bytes(pa, 8) == bytes([0x34, 0xAB, 0, 0, 4, 3, 2, 1])
    assert mem.read(pa + 4, 4) == 0x0102_0304
    assert mem.read(pa + 1, 1) == 0xAB


@given(st.integers(0, (1 << 64) - 1), st.sampled_from([1, 2, 4, 8]), st.integers(0, 511))
@settings(max_examples=100)
def test_store_then_load_round_trips(value, size, word):
    """read(pa, size) returns what write(pa, value, size) stored, masked to its width."""
    mem = PhysicalMemory(0, 1 << 16)
    pa = 0x2000 + word * 8 + (8 - size if size < 8 else 0)
    value &= (1 << (8 * size)) - 1
    mem.write(pa, value, size)
    assert mem.read(pa, size) == value
    assert mem.read_bytes(pa, size) == value.to_bytes(size, "little")


def test_read_bytes_crosses_frames():
    """read_bytes stitches consecutive frames, including never-written ones."""
    mem = PhysicalMemory(0, 1 << 16)
    mem.write64(0x0FF8, 0x1111_1111_1111_1111)
    mem.write64(0x2000, 0x2222_2222_2222_2222)
    data = mem.read_bytes(0x0FF8, 0x1010)
    assert data[:8] == b"\x11" * 8 and data[8:0x1008] == bytes(0x1000) and data[-8:] == b"\x22" * 8


@pytest.mark.parametrize("pa", [0x3FFF_FFF8, 0x4010_0000, 1 << 50])
def test_outside_dram_is_an_external_abort(pa):
    """Accesses outside [base, base + size) raise ExternalAbort."""
    mem = PhysicalMemory(0x4000_0000, 1 << 20)
    with pytest.raises(ExternalAbort):
        mem.read64(pa)
    with pytest.raises(ExternalAbort):
        mem.write64(pa, 1)


@pytest.mark.parametrize(("base", "size"), [(0, 0), (0, 100), (0x800, 1 << 20), (0, -4096)])
def test_bad_geometry_is_a_config_error(base, size):
    """DRAM must be a positive multiple of 4 KiB at a 4 KiB-aligned base."""
    with pytest.raises(ConfigError):
        PhysicalMemory(base, size)


def test_frame_ro_is_shared_and_read_only_until_written():
    """An untouched frame reads as a shared read-only zero frame."""
    mem = PhysicalMemory(0, 1 << 20)
    ro = mem.frame_ro(5)
    assert not ro.flags.writeable
    with pytest.raises(ValueError):
        ro[0] = 1
    mem.frame(5)[3] = 9
    assert mem.frame_ro(5)[3] == 9


def test_zero_frame_clears_in_place():
    """zero_frame keeps the same array (TLB entries hold references to it)."""
    mem = PhysicalMemory(0, 1 << 20)
    f = mem.frame(2)
    f[:] = np.uint64(7)
    mem.zero_frame(2)
    mem.zero_frame(3)  # never written: nothing to do
    assert mem.frame(2) is f and not f.any()
    assert mem.resident_frames() == 1
