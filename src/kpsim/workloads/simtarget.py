"""The model side of ``kpsim conform``: a simulated process as a :class:`StepTarget`.

``make_sim_target(args)`` boots a machine (4 GiB by default; ``args`` may carry
``memory``, ``cpus``, ``pt_reclaim``, ``hardened_pgtables``, ``thp`` (the
``transparent_hugepage/enabled`` mode), ``thp_use_zero_page`` and ``seed``) and
creates a process: with ``seed`` (a :class:`~kpsim.workloads.snapshot.Snapshot` of the
host child) a copy of that address space (:func:`process_from_snapshot`), so that
kernel-chosen addresses and shared slots are the host's; otherwise a process with a
touched stack page, like a freshly exec'd program, whose mmap base lies in the stack's
1 GiB slot. Steps map to the simulated system calls of :mod:`kpsim.mm` (``file``
mappings to a new model file, ``brk`` to ``sys_brk``); ``fork`` leaves the child alive
and reports its table count. ``model_pt_pages_for_snapshot(snap)`` is the model's count
for a live process (``kpsim snapshot --check``); ``model_pt_pages_for_present(ranges)``
the §4 prediction: the distinct 2 MiB, 1 GiB and 512 GiB slots of the present pages.
"""

from __future__ import annotations

import errno
from typing import Any

from kpsim.errors import ConfigError
from kpsim.machine import boot
from kpsim.mm import memory as m
from kpsim.mm import mmap as mm_
from kpsim.mm.madvise import ADVICE
from kpsim.mm.mm_types import (
    TASK_SIZE,
    FileRef,
    MmContext,
    MmStruct,
    SegmentationFault,
    Vma,
    VmFlags,
)
from kpsim.mm.mmap import prot_to_vm
from kpsim.mm.process import Process, mm_context
from kpsim.workloads.snapshot import Snapshot
from kpsim.workloads.snapshot import Vma as SnapVma

#: ``transparent_hugepage/enabled`` modes the model knows
THP_MODES = ("always", "madvise", "never")

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

    def __init__(
        self,
        machine: Any,
        *,
        pt_reclaim: bool | None = None,
        thp: str | None = None,
        thp_use_zero_page: bool | None = None,
        seed: Snapshot | None = None,
    ) -> None:
        self.machine = machine
        ctx = mm_context(machine.k, machine.arch, pt_reclaim=pt_reclaim)
        if thp is not None:
            ctx.thp = thp
        if thp_use_zero_page is not None:
            ctx.thp_use_zero_page = thp_use_zero_page
        self.proc = (
            Process.create(ctx, "conform") if seed is None else process_from_snapshot(ctx, seed)
        )
        self.children: list[Process] = []

    def mmap(self, addr: int | None, length: int, prot: str, flags: frozenset[str]) -> int:
        f = mm_.MAP_SHARED if "shared" in flags else mm_.MAP_PRIVATE
        for name in flags:
            f |= _FLAGS.get(name, 0)
        if "file" in flags:  # a fresh memfd: a shmem file of the mapping's length
            file = self.proc.ctx.new_file(length)
            return self.proc.mmap(addr, length, prot_bits(prot), f, file)
        return self.proc.mmap(addr, length, prot_bits(prot), f | mm_.MAP_ANONYMOUS)

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

    def brk(self, delta: int) -> int:
        old = self.proc.mm.brk
        if self.proc.brk(old + delta) != old + delta:
            raise OSError(errno.ENOMEM, "brk: the heap cannot move there")
        return old

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
    for key in ("arch", "hardened_pgtables", "linear_map", "batching"):
        if get(key, None) is not None:
            opts[key] = get(key)
    pt_reclaim = get("pt_reclaim", None)
    if pt_reclaim is not None:
        pt_reclaim = bool(pt_reclaim)
        opts["pt_reclaim"] = pt_reclaim
    thp = get("thp", None)
    if thp is not None and thp not in THP_MODES:
        raise ConfigError(f"thp: expected one of {', '.join(THP_MODES)}, got {thp!r}")
    zero = get("thp_use_zero_page", None)
    return SimTarget(
        boot(**opts),
        pt_reclaim=pt_reclaim,
        thp=thp,
        thp_use_zero_page=None if zero is None else bool(zero),
        seed=get("seed", None),
    )


# ------------------------------------------------------------ from a snapshot

#: smaps ``VmFlags`` mnemonics (``show_smap_vma_flags``) the model keeps
_SMAPS_FLAGS = {
    "gd": VmFlags.GROWSDOWN,
    "ac": VmFlags.ACCOUNT,
    "nr": VmFlags.NORESERVE,
    "dc": VmFlags.DONTCOPY,
    "wf": VmFlags.WIPEONFORK,
    "hg": VmFlags.HUGEPAGE,
    "nh": VmFlags.NOHUGEPAGE,
    "mr": VmFlags.MAYREAD,
    "mw": VmFlags.MAYWRITE,
    "me": VmFlags.MAYEXEC,
    "ms": VmFlags.MAYSHARE,
}


def _snapshot_vma(
    ctx: MmContext, v: SnapVma, smaps: tuple[str, int] | None, files: dict[str, FileRef]
) -> Vma:
    """A model VMA for one ``/proc/PID/maps`` line (flags from smaps when read)."""
    flags = prot_to_vm(prot_bits("".join(c for c in v.perms[:3] if c != "-") or "none"))
    shared = v.perms[3] == "s"
    if smaps is not None:
        for word in smaps[0].split():
            flags |= _SMAPS_FLAGS.get(word, VmFlags.NONE)
    else:
        flags |= VmFlags.MAYREAD | VmFlags.MAYWRITE | VmFlags.MAYEXEC
        if v.path == "[stack]":
            flags |= VmFlags.GROWSDOWN
    if shared:
        flags |= VmFlags.SHARED | VmFlags.MAYSHARE
    file: FileRef | None = None
    if shared or v.path.startswith("/") or (v.path.startswith("[") and v.path not in _ANON):
        key = v.path if v.path.startswith("/") and not shared else f"{v.path}@{v.start:#x}"
        if key not in files:  # one file per path; specials and shmem get their own
            files[key] = ctx.new_file(1 << 40)
        file = files[key]
    else:
        flags |= VmFlags.ANON
    anon_kb = None if smaps is None else smaps[1]
    has_anon = bool(anon_kb) if anon_kb is not None else bool(flags & VmFlags.WRITE)
    # vma_needs_copy also copies PFN and mixed maps (vvar, vdso): the model's fork
    # copies a VMA's tables when it has an anon_vma, so such a VMA is given one.
    special = smaps is not None and bool({"pf", "mx"} & set(smaps[0].split()))
    anon_vma = ctx.new_anon_vma() if (has_anon and not shared) or special else None
    # maps shows no offset for anonymous VMAs: assume their pgoff is their address, as
    # mmap sets it (wrong for VMAs mremap moved; matters only for merges with them)
    pgoff = (v.offset if file is not None else v.start) >> 12
    return Vma(v.start, v.end, flags, file, pgoff, anon_vma, v.path)


_ANON = ("[heap]", "[stack]")


def process_from_snapshot(ctx: MmContext, snap: Snapshot, comm: str = "snapshot") -> Process:
    """A simulated process with the VMAs and page-table slots of a live process.

    Each VMA of the snapshot becomes a model VMA (anonymous or file-backed, private
    or shared, with the smaps flags that decide merging and fork); then, in every
    2 MiB slot where a VMA has a present (or swapped) page, one page is faulted in
    as the process would (a write where the VMA has anonymous pages), which builds
    the same tables at every level as the live process's present pages imply
    (pt-lifecycle.md §4). ``mmap_base`` is put at the end of the highest mapping
    below the stack, so top-down placement continues where the live process's did.
    """
    proc = Process.create(ctx, comm, stack=False)
    mm = proc.mm
    files: dict[str, FileRef] = {}
    vmas = [v for v in snap.vmas if v.end <= TASK_SIZE]
    smaps = snap.smaps if len(snap.smaps) == len(snap.vmas) else None
    with proc.kernel():
        for i, v in enumerate(snap.vmas):
            if v.end > TASK_SIZE:
                continue
            vma = _snapshot_vma(ctx, v, None if smaps is None else smaps[i], files)
            mm.insert_vma(vma)
            if v.path == "[heap]":
                mm.start_brk, mm.brk = v.start, v.end
        stack = [v.start for v in vmas if v.path == "[stack]"]
        below = [v.end for v in vmas if not stack or v.end <= stack[0]]
        if below:
            mm.mmap_base = max(below)
        for start, end in snap.present:
            _fault_slots(mm, start, end)
    return proc


def _fault_slots(mm: MmStruct, start: int, end: int) -> None:
    """Fault one page per (VMA, 2 MiB slot) piece of [start, end)."""
    for vma in mm.overlapping(start, end):
        addr = max(start, vma.start)
        stop = min(end, vma.end)
        while addr < stop:
            write = bool(vma.flags & VmFlags.WRITE) and vma.anon_vma is not None
            try:
                m.handle_mm_fault(mm, addr, write)
            except SegmentationFault:  # PROT_NONE or exec-only: the entry is still there
                m.pxd_alloc(mm, 3, addr)
            addr = ((addr >> 21) + 1) << 21


def model_pt_pages_for_snapshot(snap: Snapshot, args: Any = None) -> int:
    """The table count of a simulated copy of the snapshot's process (``--check``)."""
    target = make_sim_target(args or {"memory": "1G", "cpus": 1, "seed": snap})
    try:
        return target.pt_pages()
    finally:
        target.close()


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
