"""Shared helpers for the user address-space tests (a booted machine and a process)."""

from __future__ import annotations

from kpsim.machine import boot
from kpsim.mm import mmap as mm_
from kpsim.mm.process import Process, mm_context

T = 1 << 40
G = 1 << 30
M = 1 << 20
K4 = 4096
FIXED = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS | mm_.MAP_NORESERVE | mm_.MAP_FIXED_NOREPLACE
RW = mm_.PROT_READ | mm_.PROT_WRITE


def machine(memory: str = "2G", **kw):
    return boot(memory=memory, cpus=2, **kw)


def proc(m=None, **kw) -> Process:
    m = m if m is not None else machine()
    mm_context(m.k, m.arch, **kw)
    return Process.create(m, stack=False)


def region(p: Process, addr: int, length: int, prot: int = RW, flags: int = FIXED) -> int:
    return p.mmap(addr, length, prot, flags)


def slots(ranges: list[tuple[int, int]]) -> int:
    """Tables implied by present pages: distinct 2M + 1G + 512G slots (pt-lifecycle §4)."""
    total = 0
    for sh in (21, 30, 39):
        s = set()
        for a, b in ranges:
            s.update(range(a >> sh, ((b - 1) >> sh) + 1))
        total += len(s)
    return total


def buddy_state(pa) -> tuple[object, ...]:
    """What decides later allocations: each free list in order, the orders, the runs,
    the allocated blocks and the free count."""
    lists = []
    for o in range(11):
        s, out, p = -1 - o, [], pa._next[-1 - o]
        while p != s:
            out.append(p)
            p = pa._next[p]
        lists.append(out)
    return lists, dict(pa._order), dict(pa._runs), dict(pa._alloc), pa.nr_free
