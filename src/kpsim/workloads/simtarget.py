"""The model side of ``kpsim conform``: a simulated process as a :class:`StepTarget`.

``make_sim_target(args)`` boots a machine (4 GiB by default; ``args`` may carry
``memory``, ``cpus``, ``pt_reclaim``, ``hardened_pgtables``) and creates a process
with a touched stack page, like a freshly exec'd program, whose mmap base lies in the
stack's 1 GiB slot. Steps map to the simulated system calls of :mod:`kpsim.mm`;
``fork`` leaves the child alive and reports its table count.
``model_pt_pages_for_present(ranges)`` is the §4 prediction: the distinct 2 MiB,
1 GiB and 512 GiB slots of the present pages.
"""

from __future__ import annotations

from typing import Any

from kpsim.machine import boot
from kpsim.mm import mmap as mm_
from kpsim.mm.madvise import ADVICE
from kpsim.mm.process import Process, mm_context

_FLAGS = {
    "fixed": mm_.MAP_FIXED,
    "fixed_noreplace": mm_.MAP_FIXED_NOREPLACE,
    "noreserve": mm_.MAP_NORESERVE,
    "populate": mm_.MAP_POPULATE,
}


def prot_bits(prot: str) -> int:
    if prot == "none":
        return mm_.PROT_NONE
    bits = 0
    for ch, bit in (("r", mm_.PROT_READ), ("w", mm_.PROT_WRITE), ("x", mm_.PROT_EXEC)):
        if ch in prot:
            bits |= bit
    return bits


class SimTarget:
    """A :class:`~kpsim.workloads.steps.StepTarget` backed by a simulated process."""

    def __init__(self, machine: Any, *, pt_reclaim: bool | None = None) -> None:
        self.machine = machine
        ctx = mm_context(machine.k, machine.arch, pt_reclaim=pt_reclaim)
        self.proc = Process.create(ctx, "conform")
        self.children: list[Process] = []

    def mmap(self, addr: int | None, length: int, prot: str, flags: frozenset[str]) -> int:
        f = mm_.MAP_SHARED if "shared" in flags else mm_.MAP_PRIVATE
        f |= mm_.MAP_ANONYMOUS
        for name in flags:
            f |= _FLAGS.get(name, 0)
        return self.proc.mmap(addr, length, prot_bits(prot), f)

    def touch(self, addr: int, length: int, stride: int, write: bool) -> None:
        self.proc.touch_range(addr, length, stride, write)

    def munmap(self, addr: int, length: int) -> None:
        self.proc.munmap(addr, length)

    def mprotect(self, addr: int, length: int, prot: str) -> None:
        self.proc.mprotect(addr, length, prot_bits(prot))

    def madvise(self, addr: int, length: int, advice: str) -> None:
        self.proc.madvise(addr, length, ADVICE[advice])

    def mremap(self, old_addr: int, old_len: int, new_len: int, new_addr: int | None) -> int:
        flags = mm_.MREMAP_MAYMOVE | (mm_.MREMAP_FIXED if new_addr is not None else 0)
        return self.proc.mremap(old_addr, old_len, new_len, flags, new_addr)

    def fork(self) -> int:
        child = self.proc.fork()
        self.children.append(child)
        return child.pt_pages()

    def pt_pages(self) -> int:
        return self.proc.pt_pages()

    def close(self) -> None:
        for c in self.children:
            if c.alive:
                c.exit()
        if self.proc.alive:
            self.proc.exit()


def make_sim_target(args: Any = None) -> SimTarget:
    """Boot a machine from ``args`` (attributes or a dict) and return a target on it."""
    get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
    opts: dict[str, Any] = {"memory": get("memory", None) or "4G", "cpus": get("cpus", None) or 2}
    for key in ("hardened_pgtables", "linear_map", "batching"):
        if get(key, None) is not None:
            opts[key] = get(key)
    pt_reclaim = get("pt_reclaim", None)
    if pt_reclaim is not None:
        opts["pt_reclaim"] = bool(pt_reclaim)
    return SimTarget(boot(**opts), pt_reclaim=pt_reclaim)


def model_pt_pages_for_present(ranges: list[tuple[int, int]]) -> int:
    """PTE + PMD + PUD tables implied by present pages in [start, end) ranges (§4)."""
    total = 0
    for shift in (21, 30, 39):
        spans = sorted((s >> shift, (e - 1) >> shift) for s, e in ranges if e > s)
        count, last = 0, -1
        for lo, hi in spans:
            lo = max(lo, last + 1)
            if hi >= lo:
                count += hi - lo + 1
                last = hi
        total += count
    return total
