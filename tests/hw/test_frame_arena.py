"""Host storage for frames: every frame handed out is zeroed, writable and its own."""

from __future__ import annotations

import gc

import numpy as np

from kpsim.hw.arm64 import frame_arena
from kpsim.hw.arm64.frame_arena import FrameArena


def test_frames_are_zeroed_distinct_and_span_arenas(monkeypatch) -> None:
    """take_one and take hand out non-overlapping zeroed rows, across arena refills."""
    monkeypatch.setattr(frame_arena, "ARENA_BYTES", 8 * 4096)  # 8 frames per arena
    arena = FrameArena()
    frames = [arena.take_one() for _ in range(5)]
    block = arena.take(6)  # more than the 3 left: a new arena
    frames += list(block) + [arena.take_one() for _ in range(4)]
    assert all(f.shape == (512,) and f.dtype == np.uint64 and not f.any() for f in frames)
    for i, f in enumerate(frames):
        f[:] = i + 1
    assert [int(f[0]) for f in frames] == list(range(1, len(frames) + 1))  # none shared
    assert all(int(f[511]) == i + 1 for i, f in enumerate(frames))


def test_a_write_to_one_frame_leaves_its_neighbour(monkeypatch) -> None:
    """Negative control for the sharing check: two views of one row would see the write."""
    arena = FrameArena()
    a, b = arena.take_one(), arena.take_one()
    a[:] = 7
    assert not b.any()
    alias = a[:]
    assert int(alias[3]) == 7


def test_a_dead_arena_is_reused_zeroed_and_a_live_one_never(monkeypatch) -> None:
    """An arena goes back to the pool only once all its frames died; reused, its rows
    come out zeroed although they were written."""
    gc.collect()  # earlier tests' dead arenas go to the real pool first
    monkeypatch.setattr(frame_arena, "ARENA_BYTES", 4 * 4096)
    monkeypatch.setattr(frame_arena, "_POOL", [])
    arena = FrameArena()
    old = [arena.take_one() for _ in range(4)]
    for f in old:
        f[:] = 0xFF
    keep = old[2]
    del old, f
    arena.take_one()  # a new arena: the old one still has a live frame
    gc.collect()
    assert frame_arena.pooled_arenas() == 0  # negative control: not reused while in use
    del keep
    gc.collect()
    assert frame_arena.pooled_arenas() == 1
    other = FrameArena()
    fresh = [other.take_one() for _ in range(3)] + list(other.take(1))
    assert frame_arena.pooled_arenas() == 0  # taken from the pool
    assert all(not f.any() for f in fresh)  # written before, zeroed now


def test_unwritten_rows_hold_no_host_memory_before_or_after_reuse(monkeypatch) -> None:
    """Rows handed out but never written stay non-resident (mincore), also when their
    arena is reused; the written ones are resident (negative control) and come back zero."""
    gc.collect()
    monkeypatch.setattr(frame_arena, "ARENA_BYTES", 64 * 4096)
    monkeypatch.setattr(frame_arena, "_POOL", [])
    arena = FrameArena()
    rows = list(arena.take(64))
    for f in rows[::8]:
        f[:] = 0xAB
    buf = rows[0].base.base  # the arena's mmap, through the flat array
    if frame_arena._MINCORE is None:  # the host cannot tell: every row counts as written
        assert frame_arena.resident_rows(buf).all()
        return
    expect = np.zeros(64, dtype=bool)
    expect[::8] = True
    assert (frame_arena.resident_rows(buf) == expect).all()
    del rows, f, arena  # the arena holds its current block too
    gc.collect()
    assert frame_arena.pooled_arenas() == 1
    again = FrameArena()
    reused = list(again.take(32)) + [again.take_one() for _ in range(32)]
    assert (frame_arena.resident_rows(buf) == expect).all()  # only the written ones
    assert all(not f.any() for f in reused)  # (reading maps the host's zero page)
