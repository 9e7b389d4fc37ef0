"""The kernel's table frees reach the CPUs' walk caches: munmap frees the PTE table
and the gather's non-last-level flush drops the cached walk to it on every CPU;
without that flush the stale entry would stay (negative control)."""

from __future__ import annotations

import pytest

from .user_rig import M, T, proc, region
from .user_rig import machine as _machine


def _walk_cached_anywhere(m, va: int, asid: int) -> bool:
    return any(c.tlb.walk_cached(va, asid + 1) is not None for c in m.hw.cpus)


def _touched(m):
    p = proc(m)
    region(p, T, 4 * M)
    p.touch(T, write=True)
    p.touch(T + 0x1000, write=True)
    assert _walk_cached_anywhere(m, T, p.mm.asid)  # the access walked through the cache
    return p


def test_munmap_freeing_the_pte_table_drops_the_cached_walk() -> None:
    m = _machine("256M")
    p = _touched(m)
    p.munmap(T, 4 * M)
    assert not _walk_cached_anywhere(m, T, p.mm.asid)


def test_negative_without_the_gather_flush_the_cached_walk_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = _machine("256M")
    p = _touched(m)
    monkeypatch.setattr(m.arch, "tlb_flush", lambda *a, **k: None)
    p.munmap(T, 4 * M)
    assert _walk_cached_anywhere(m, T, p.mm.asid)
