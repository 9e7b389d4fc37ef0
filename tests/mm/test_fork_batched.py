"""fork's whole-VMA PTE copy (copy_pte_tables) leaves exactly what the table-by-table
copy_pte_range loop leaves: the same parent and child tables (every entry), page map
counts and kinds, RSS, counters (kernel, allocator, hardware) and allocations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kpsim.mm import fork as fork_mod
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import mmap as mm_
from kpsim.mm.mm_types import PAGE_SIZE

from .user_rig import RW, M, T, machine, proc, region


def _tables(p: Any) -> dict[tuple[int, int], bytes]:
    arch = p.ctx.arch
    out = {}
    for level in (1, 2, 3):
        for slot, pfn in p.mm.tables[level].items():
            out[(level, slot)] = np.asarray(arch.read_table(pfn << 12)).tobytes()
    return out


def _state(m: Any, ps: list[Any]) -> dict[str, Any]:
    ctx = ps[0].ctx
    return {
        "counters": m.counters.snapshot(),
        "tables": [_tables(p) for p in ps],
        "rss": [(p.mm.rss_anon, p.mm.rss_file) for p in ps],
        "mapcount": ctx.mapcount.tobytes(),
        "kind": ctx.kind.tobytes(),
        "tlb": [sorted((k, e[:6]) for k, e in c.tlb.items()) for c in m.hw.cpus],
    }


def _run() -> dict[str, Any]:
    m = machine("256M")
    p = proc(m)
    # several PTE tables, partly filled, with a VMA starting and ending mid-table
    region(p, T + 64 * PAGE_SIZE, 6 * M)
    p.touch_range(T + 64 * PAGE_SIZE, 3 * M, PAGE_SIZE, write=True)
    p.touch_range(T + 4 * M, 1 * M, 2 * PAGE_SIZE, write=False)  # zero page
    p.mprotect(T + 2 * M, 16 * PAGE_SIZE, mm_.PROT_READ)  # read-only PTEs among writable
    # THPs: one PMD-mapped, one split (PTE-mapped) and partly unmapped
    region(p, T + 32 * M, 8 * M)
    p.madvise(T + 32 * M, 8 * M, madvise_mod.MADV_HUGEPAGE)
    for i in range(3):
        p.touch(T + 32 * M + i * 2 * M, write=True)
    p.munmap(T + 34 * M + 100 * PAGE_SIZE, 8 * PAGE_SIZE)
    # file pages, private (COW) and shared (not write-protected)
    f = p.ctx.new_file(4 * M)
    fa = p.mmap(T + 64 * M, 4 * M, RW, mm_.MAP_PRIVATE | mm_.MAP_FIXED, f)
    p.touch_range(fa, 4 * M, PAGE_SIZE, write=False)
    p.touch_range(fa, 1 * M, 4 * PAGE_SIZE, write=True)
    fb = p.mmap(T + 80 * M, 4 * M, RW, mm_.MAP_SHARED | mm_.MAP_FIXED, f)
    p.touch_range(fb, 4 * M, PAGE_SIZE, write=True)
    c = p.fork()
    c2 = c.fork()  # a fork of a fork: COW-shared pages write-protected already
    return _state(m, [p, c, c2])


def test_batched_fork_copy_matches_table_by_table(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = fork_mod.copy_pte_tables

    def spy(*a: Any) -> None:
        calls.append(len(a[3]))
        real(*a)

    monkeypatch.setattr(fork_mod, "copy_pte_tables", spy)
    batched = _run()
    assert calls and max(calls) > 1  # the control: the batched path ran

    def loop(dst: Any, src: Any, vma: Any, slots: list[int]) -> None:
        for slot in slots:
            fork_mod.copy_pte_range(dst, src, vma, slot)

    monkeypatch.setattr(fork_mod, "copy_pte_tables", loop)
    reference = _run()
    assert batched.keys() == reference.keys()
    for key in batched:
        assert batched[key] == reference[key], key
