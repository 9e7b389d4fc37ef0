"""A table-heavy churn workload for comparing kpkeys table allocators (issue 6).

Deterministic for a seed: processes are created, fork, fault memory in (a few PTE
tables each) and exit while a pool of them stays alive; vmalloc areas are allocated
and freed; now and then a foreign linear-map change is made on a page (the
``set_direct_map_invalid_noflush``/``default`` pair of secretmem/execmem, or
``set_memory_ro``/``rw``). :func:`memory_pressure` then fills the buddy allocator until
an allocation fails (which runs the shrinkers) and gives everything back.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.process import Process, mm_context
from kpsim.mm.vmalloc import vfree, vmalloc

MAP_LEN = 8 << 20


def churn(
    m: Any,
    rounds: int,
    *,
    seed: int = 0,
    pool: int = 24,
    foreign_every: int = 8,
    spread: bool = False,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Run ``rounds`` rounds; returns how many processes and foreign changes ran."""
    rng = random.Random(seed)
    ctx = mm_context(m.k, m.arch)
    live: list[Process] = []
    areas: list[int] = []
    stats = {"processes": 0, "foreign": 0, "vmalloc": 0}
    for r in range(rounds):
        if live and rng.random() < 0.5:
            child = rng.choice(live).fork()
        else:
            child = Process.create(ctx, "churn")
        stats["processes"] += 1
        addr = child.mmap(None, MAP_LEN)
        child.touch_range(
            addr + rng.randrange(0, 4) * (1 << 21), 1 << 21, stride=1 << 19, write=True
        )
        live.append(child)
        while len(live) > pool:
            live.pop(rng.randrange(len(live))).exit()
        if rng.random() < 0.5:
            a = vmalloc(m.k, rng.choice((4096, 16384, 65536)))
            if a:
                areas.append(a)
                stats["vmalloc"] += 1
        if areas and rng.random() < 0.45:
            vfree(m.k, areas.pop(rng.randrange(len(areas))))
        if foreign_every and r % foreign_every == foreign_every - 1:
            foreign_change(m, rng, spread=spread)
            stats["foreign"] += 1
        if on_round is not None:
            on_round(r)
    for p in live:
        p.exit()
    for a in areas:
        vfree(m.k, a)
    return stats


def foreign_change(m: Any, rng: random.Random, *, spread: bool = False) -> None:
    """A linear-map change on one ordinary page, made and undone (a foreign split).

    With ``spread`` the page is a random one of a fresh 2 MiB block (worst case: every
    change splits a block); otherwise it is the buddy allocator's next page."""
    order = 9 if spread else 0
    head = m.k.page_alloc.alloc_pages(GFP_KERNEL | Gfp.NOWARN, order)
    if head is None:
        return
    pfn = head + rng.randrange(1 << order)
    if rng.random() < 0.5:
        m.arch.set_direct_map_invalid_noflush(pfn)
        m.arch.set_direct_map_default_noflush(pfn)
    else:
        va = m.arch.page_to_virt(pfn)
        m.arch.set_memory_ro(va, 1)
        m.arch.set_memory_rw(va, 1)
    m.k.page_alloc.free_pages(head, order)


def memory_pressure(m: Any, order: int = 4) -> int:
    """Take every free block of ``order`` (reclaim runs when the buddy runs dry), then
    free them all; returns how many pages were taken."""
    taken: list[int] = []
    gfp = GFP_KERNEL | Gfp.NOWARN
    while True:
        pfn = m.k.page_alloc.alloc_pages(gfp, order)
        if pfn is None:
            break
        taken.append(pfn)
    for pfn in taken:
        m.k.page_alloc.free_pages(pfn, order)
    return len(taken) << order
