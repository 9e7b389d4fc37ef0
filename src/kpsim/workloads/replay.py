"""Replaying a recorded program in a simulated machine (``kpsim replay``).

Takes the resolved operations of :func:`kpsim.workloads.trace.memory_ops` and drives
the user-mm API of :mod:`kpsim.mm.process` with them, in trace order:

- **Tasks and address spaces.** Every thread group has an address space (a
  :class:`~kpsim.mm.process.Process`); a new thread (CLONE_THREAD) and a child
  made with CLONE_VM but not CLONE_THREAD (vfork, posix_spawn) run in their parent's
  mm, the latter until it execs (``copy_mm`` with CLONE_VM takes a reference);
  a plain fork copies it (``dup_mm``). An mm is torn down (``exit_mmap``) when its
  last user exits or execs away (``mmput``).
- **Exec** (``begin_new_exec`` -> ``exec_mmap``): the group gets a new empty mm; the
  old one is released (torn down unless a vfork parent still uses it). The
  kernel-mode faults that built the new image were moved after the exec by
  :func:`~kpsim.workloads.trace.memory_ops`.
- **Mappings** with the addresses the real kernel returned: mmap is replayed with
  ``MAP_FIXED`` at the returned address (``MAP_LOCKED`` populates, as
  ``mm_populate`` does), mremap with ``MREMAP_FIXED`` when it moved, brk with the
  returned break (the first break a process reports after exec sets ``start_brk``),
  munmap, mprotect and madvise as traced.
- **Faults** at their address with their access (error code bit 1: write): the
  kernel's ``handle_mm_fault`` runs with the process current, whatever the model's
  tables hold (a page it already has takes the spurious path). A run of faults filling
  a buffer is done a PTE table at a time (see :meth:`Replayer.run`).
- **Mappings the trace cannot show** (made by the kernel at exec: the stack,
  vdso/vvar, the ELF image, the interpreter; or made before the trace began) are
  created lazily: a fault where the model has no VMA gets an anonymous read-write
  "[lazy]" VMA covering the gap around the address, clipped to the 2 MiB span of
  the address (the span whose PTE table the fault populates); an mprotect or mremap
  that succeeded on a range the model lacks fills the holes of exactly that range.
  See docs/fidelity.md, "Trace replay".
- Processes running before the trace began start with an empty address space
  (reported as ``pre_existing``).

An operation the model refuses (a fault it cannot resolve, a syscall error) is
counted by reason, never fatal. Page-table pages (VmPTE: PTE + PMD + PUD tables)
are sampled before every operation that can free tables, and just before each
thread group's exit.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kpsim.errors import KpsimError
from kpsim.mm import mmap as mm_
from kpsim.mm.memory import handle_mm_fault
from kpsim.mm.mm_types import (
    PAGE_SIZE,
    PMD_SIZE,
    FileRef,
    MmStruct,
    SegmentationFault,
    Vma,
    VmFlags,
)
from kpsim.mm.process import Process, mm_context
from kpsim.workloads.trace import (
    Brk,
    Clone,
    Event,
    Exec,
    Exit,
    Fault,
    Madvise,
    MemOp,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    ProcessExec,
    Skipped,
    memory_ops,
)

MAP_LOCKED = 0x2000  # include/uapi/asm-generic/mman.h (x86 value)
MREMAP_DONTUNMAP = 4
PROT_GROWSDOWN, PROT_GROWSUP = 0x0100_0000, 0x0200_0000
#: vm.mmap_min_addr's default: nothing is ever mapped below it, so a fault there is a
#: SIGSEGV the program asked for (a JVM's implicit null check), never a lazy VMA.
MMAP_MIN_ADDR = 0x10000
#: Shortest run of faults replayed a PTE table at a time (``fault_batch.MIN_BATCH``).
RUN_MIN = 8
LAZY_NAME = "[lazy]"
_LOST = "perf lost events here: the trace is incomplete"
_LAZY_FLAGS = (
    VmFlags.READ
    | VmFlags.WRITE
    | VmFlags.EXEC
    | VmFlags.MAYREAD
    | VmFlags.MAYWRITE
    | VmFlags.MAYEXEC
    | VmFlags.ANON
)


@dataclass(slots=True)
class ProcessReport:
    """One thread group of the trace (``pid``), as replayed."""

    pid: int
    comm: str
    pt_pages_peak: int = 0
    pt_pages_at_exit: int | None = None  # None: still running at the end of the trace
    pre_existing: bool = False  # running before the trace began (started empty)
    exited: bool = False
    exit_code: int | None = None
    execs: int = 0
    shared_mm_at_exit: bool = False  # exited in a parent's mm (vfork child without exec)
    exec_first: bool = False  # pre-existing, but its first traced act was an exec

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "pt_pages_peak": self.pt_pages_peak,
            "pt_pages_at_exit": self.pt_pages_at_exit,
            "pre_existing": self.pre_existing,
            "exited": self.exited,
            "exit_code": self.exit_code,
            "execs": self.execs,
            "shared_mm_at_exit": self.shared_mm_at_exit,
            "exec_first": self.exec_first,
        }


@dataclass(slots=True)
class ReplayResult:
    """What a replay produced: per process reports, machine counters, tallies."""

    processes: list[ProcessReport]
    counters: dict[str, int]
    records: int = 0  # trace records read
    ops: dict[str, int] = field(default_factory=dict)  # resolved operations by kind
    skipped: dict[str, int] = field(default_factory=dict)  # trace records not replayed
    refused: dict[str, int] = field(default_factory=dict)  # operations the model refused
    lazy_vmas: int = 0  # VMAs created for mappings the trace does not show
    notes: list[str] = field(default_factory=list)

    def process(self, pid: int) -> ProcessReport:
        for p in self.processes:
            if p.pid == pid:
                return p
        raise KeyError(pid)


class _Mm:
    """An address space and the tasks (tids) using it (``mm_users``)."""

    __slots__ = ("groups", "proc", "users")

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.users: set[int] = set()
        self.groups: set[int] = set()  # thread groups whose mm this is


class Replayer:
    """Replays resolved operations on one machine (see the module docstring)."""

    def __init__(
        self,
        machine: Any,
        *,
        lazy: bool = True,
        batching: bool = True,
        arg_pages: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        self.machine = machine
        #: trace line of an exec -> [lo, hi): the stack its copy_strings filled
        self.arg_pages = arg_pages or {}
        self.lazy = lazy  # create VMAs for mappings the trace does not show
        self.batching = batching  # runs of faults a PTE table at a time (see run())
        self.batched = 0  # faults replayed in such runs
        self.ctx = mm_context(machine.k, machine.arch)
        self.ncpus = max(1, int(machine.config.cpus))
        self.next_cpu = 0
        self.task_mm: dict[int, _Mm] = {}  # tid -> mm it runs in
        self.task_group: dict[int, int] = {}  # tid -> thread-group id
        self.group_mm: dict[int, _Mm] = {}  # thread-group id -> its current mm
        self.reports: dict[int, ProcessReport] = {}
        self.files: dict[tuple[int, int], FileRef] = {}
        self.skipped: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.ops: dict[str, int] = {}
        self.lazy_vmas = 0
        self._dispatch = {
            Mmap: self._mmap,
            Munmap: self._munmap,
            Mprotect: self._mprotect,
            Madvise: self._madvise,
            Mremap: self._mremap,
            Brk: self._brk,
            Exec: self._exec,
            Exit: self._exit,
            Skipped: self._skip,
        }

    # -- bookkeeping ---------------------------------------------------------------------
    def _refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    def _report(self, pid: int, comm: str) -> ProcessReport:
        r = self.reports.get(pid)
        if r is None:
            r = self.reports[pid] = ProcessReport(pid, comm)
        return r

    def _new_mm(self, comm: str) -> _Mm:
        self.next_cpu = (self.next_cpu + 1) % self.ncpus
        return _Mm(Process.create(self.ctx, comm, cpu=self.next_cpu, stack=False))

    def _sample(self, mm: _Mm) -> int:
        n = mm.proc.mm.pgtables_pages()
        for g in mm.groups:
            r = self.reports.get(g)
            if r is not None and n > r.pt_pages_peak:
                r.pt_pages_peak = n
        return n

    def _mm_of(self, op: MemOp, *, exec_first: bool = False) -> _Mm:
        """The mm ``op``'s task runs in; a task first seen here started before the trace."""
        mm = self.task_mm.get(op.tid)
        if mm is not None:
            return mm
        mm = self.group_mm.get(op.pid)
        if mm is None or not mm.proc.alive:  # (a group whose known tasks all exited)
            mm = self.group_mm[op.pid] = self._new_mm(op.comm)
            mm.groups.add(op.pid)
            r = self._report(op.pid, op.comm)
            r.pre_existing = True
            r.exec_first = exec_first
        mm.users.add(op.tid)
        self.task_mm[op.tid] = mm
        self.task_group[op.tid] = op.pid
        return mm

    def _release(self, mm: _Mm, tid: int, group: int | None) -> None:
        """``mmput`` by task ``tid`` (and its group leaving when ``group`` is given)."""
        mm.users.discard(tid)
        if group is not None:
            mm.groups.discard(group)
        if not mm.users and mm.proc.alive:
            self._sample(mm)
            mm.proc.exit()

    # -- the replay loop -------------------------------------------------------------------
    def run(self, ops: Iterable[MemOp]) -> None:
        """Replay ``ops`` in order.

        Consecutive faults of one address space run inside one kernel entry of its
        process (one ``switch_to`` check, not one per fault); any other operation
        leaves it first. A run of at least :data:`RUN_MIN` consecutive not-present
        faults of one mm with the same access, in one 2 MiB span, on pages in
        arithmetic progression (a loop filling a buffer) inside one anonymous VMA is
        replayed with :meth:`Process.touch_range`, which resolves such runs a PTE table
        at a time (:mod:`kpsim.mm.fault_batch`); anything else fault by fault.
        """
        dispatch = self._dispatch
        counts = self.ops
        task_mm = self.task_mm
        fault = self._fault_in
        flush = self._flush_run
        batching = self.batching
        nfaults = 0
        cur: _Mm | None = None
        entered: Any = None
        pend: list[tuple[int, int]] = []  # the faults of the current run: (address, code)
        key = step = last = -1  # the run's (2 MiB span, access bits), page step, last page
        try:
            for op in ops:
                cls = type(op)
                if cls is Fault:
                    nfaults += 1
                    mm = task_mm.get(op.tid)
                    if mm is None or mm is not cur:
                        if pend:
                            flush(cur, pend, step)  # type: ignore[arg-type]
                            pend = []
                            key = -1
                        if entered is not None:
                            entered.__exit__(None, None, None)
                            entered = None
                        if mm is None:
                            mm = self._mm_of(op)
                        entered = mm.proc.kernel()
                        entered.__enter__()
                        cur = mm
                    addr: int = op.address  # type: ignore[union-attr]
                    code: int = op.error_code  # type: ignore[union-attr]
                    if not batching:
                        fault(mm.proc.mm, addr, code)
                        continue
                    page = addr >> 12
                    k = (page >> 9) << 2 | (code & 3)
                    if k == key and page > last and (step < 0 or page - last == step):
                        if step < 0:
                            step = page - last
                        last = page
                        pend.append((addr, code))
                        continue
                    if pend:
                        flush(mm, pend, step)
                    pend = [(addr, code)]
                    key, step, last = k, -1, page
                    continue
                if pend:
                    flush(cur, pend, step)  # type: ignore[arg-type]
                    pend = []
                    key = -1
                if entered is not None:
                    entered.__exit__(None, None, None)
                    entered = cur = None
                name = cls.__name__
                counts[name] = counts.get(name, 0) + 1
                handler = dispatch.get(cls)
                if handler is None:  # Clone and Vfork
                    self._clone(op)  # type: ignore[arg-type]
                else:
                    handler(op)  # type: ignore[operator]
            if pend:
                flush(cur, pend, step)  # type: ignore[arg-type]
        finally:
            if entered is not None:
                entered.__exit__(None, None, None)
            counts["Fault"] = counts.get("Fault", 0) + nfaults

    def _flush_run(self, mm: _Mm, pend: list[tuple[int, int]], step: int) -> None:
        """Replay a run of faults (see :meth:`run`); the process is current."""
        m = mm.proc.mm
        first, code = pend[0]
        if len(pend) >= RUN_MIN and not code & 1:
            last = pend[-1][0]
            write = bool(code & 2)
            vma = m.find_vma(first)
            need = VmFlags.WRITE if write else VmFlags.READ | VmFlags.WRITE
            if (
                vma is not None
                and vma.start <= first
                and last < vma.end
                and vma.file is None
                and vma.flags & need
            ):
                base = first & ~(PAGE_SIZE - 1)
                try:
                    mm.proc.touch_range(base, (last - base) + 1, step * PAGE_SIZE, write)
                except SegmentationFault:
                    pass  # not expected in an anonymous VMA; redo one by one below
                else:
                    self.batched += len(pend)
                    return
        fault = self._fault_in
        for addr, c in pend:
            fault(m, addr, c)

    def result(self, records: int = 0) -> ReplayResult:
        for mm in {id(m): m for m in self.group_mm.values()}.values():
            if mm.proc.alive:
                self._sample(mm)
        procs = sorted(self.reports.values(), key=lambda r: r.pid)
        notes = []
        pre = [r.pid for r in procs if r.pre_existing and not r.exec_first]
        if pre:
            notes.append(
                f"{len(pre)} process(es) were running before the trace began and started "
                f"with an empty address space: {', '.join(map(str, pre))}"
            )
        pre_exec = [r.pid for r in procs if r.exec_first]
        if pre_exec:
            notes.append(
                f"{len(pre_exec)} process(es) were running before the trace began but exec'd "
                f"first (their replayed address space is complete): "
                f"{', '.join(map(str, pre_exec))}"
            )
        alive = [r.pid for r in procs if not r.exited]
        if alive:
            notes.append(
                f"{len(alive)} process(es) had not exited when the trace ended "
                f"(no pt_pages_at_exit): {', '.join(map(str, alive))}"
            )
        lost = self.skipped.get(_LOST, 0)
        if lost:
            notes.append(
                f"the trace is incomplete: perf lost events at {lost} place(s); "
                "figures may be wrong (record again with a larger buffer)"
            )
        if self.lazy_vmas:
            notes.append(
                f"{self.lazy_vmas} VMA(s) created on first use for mappings the trace "
                "does not show (kernel-made at exec, or made before the trace began)"
            )
        return ReplayResult(
            procs,
            dict(self.machine.counters),
            records,
            dict(self.ops),
            dict(self.skipped),
            dict(self.refused),
            self.lazy_vmas,
            notes,
        )

    # -- faults --------------------------------------------------------------------------------
    def _fault_in(self, mm: MmStruct, addr: int, error_code: int) -> None:
        """The traced fault: ``handle_mm_fault`` at ``addr`` (the process is current).

        The trace says the hardware faulted, so the kernel's handler runs whatever
        state the model's page tables are in (a page the model already has takes the
        spurious-fault path, as a racing thread's fault does in Linux).
        """
        write = bool(error_code & 2)
        try:
            handle_mm_fault(mm, addr, write)
        except SegmentationFault:
            if not self._lazy_vma(mm, addr):
                self._refuse("fault the model cannot resolve (SIGSEGV)")
                return
            try:
                handle_mm_fault(mm, addr, write)
            except SegmentationFault:
                self._refuse("fault the model cannot resolve (SIGSEGV)")

    def _lazy_vma(self, mm: MmStruct, addr: int) -> bool:
        """Create a "[lazy]" VMA for a fault outside every VMA; False if one covers it."""
        vma = mm.find_vma(addr)
        if not self.lazy or addr < MMAP_MIN_ADDR or (vma is not None and vma.start <= addr):
            return False
        lo = addr & ~(PMD_SIZE - 1)
        hi = lo + PMD_SIZE
        prev, nxt = mm.neighbours(addr, addr + 1)
        if prev is not None:
            lo = max(lo, prev.end)
        if vma is not None:
            hi = min(hi, vma.start)
        elif nxt is not None:
            hi = min(hi, nxt.start)
        self._add_lazy(mm, lo, hi)
        return True

    def _add_lazy(self, mm: MmStruct, lo: int, hi: int) -> None:
        mm.insert_vma(Vma(lo, hi, _LAZY_FLAGS, name=LAZY_NAME))
        self.lazy_vmas += 1

    def _fill(self, mm: MmStruct, start: int, end: int) -> None:
        """Cover the holes of [start, end) with "[lazy]" VMAs (the call succeeded live)."""
        if not self.lazy:
            return
        a = start
        for vma in mm.overlapping(start, end):
            if vma.start > a:
                self._add_lazy(mm, a, vma.start)
            a = max(a, vma.end)
        if a < end:
            self._add_lazy(mm, a, end)

    # -- system calls -------------------------------------------------------------------------
    def _syscall(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except KpsimError as err:
            code = getattr(err, "errno", None)
            name = errno.errorcode.get(code, "error") if isinstance(code, int) else "error"
            self._refuse(f"{what} refused by the model ({name})")
            return None

    def _mmap(self, op: Mmap) -> None:
        mm = self._mm_of(op)
        self._sample(mm)
        flags = (op.flags & ~mm_.MAP_FIXED_NOREPLACE) | mm_.MAP_FIXED
        if flags & MAP_LOCKED:
            flags |= mm_.MAP_POPULATE
        file = None
        if not op.flags & mm_.MAP_ANONYMOUS and op.fd >= 0:
            key = (op.pid, op.fd)
            file = self.files.get(key)
            if file is None:
                file = self.files[key] = self.ctx.new_file(1 << 40)
        pgoff = op.offset // PAGE_SIZE if file is not None else 0
        self._syscall("mmap", mm.proc.mmap, op.addr, op.length, op.prot, flags, file, pgoff)

    def _munmap(self, op: Munmap) -> None:
        mm = self._mm_of(op)
        self._sample(mm)
        self._syscall("munmap", mm.proc.munmap, op.addr, op.length)

    def _mprotect(self, op: Mprotect) -> None:
        mm = self._mm_of(op)
        start = op.addr
        end = start + mm_.page_align(op.length)
        if start & (PAGE_SIZE - 1) or end <= start:
            self._refuse("mprotect with a bad range")
            return
        self._fill(mm.proc.mm, start, end)
        prot = op.prot & ~(PROT_GROWSDOWN | PROT_GROWSUP)
        self._syscall("mprotect", mm.proc.mprotect, start, op.length, prot)

    def _madvise(self, op: Madvise) -> None:
        mm = self._mm_of(op)
        self._sample(mm)
        self._syscall(f"madvise({op.behavior})", mm.proc.madvise, op.addr, op.length, op.behavior)

    def _mremap(self, op: Mremap) -> None:
        mm = self._mm_of(op)
        self._sample(mm)
        if op.old_len == 0 or op.flags & MREMAP_DONTUNMAP:
            self._refuse("mremap duplicating or keeping a mapping (not modelled)")
            return
        start, end = op.old_addr, op.old_addr + mm_.page_align(op.old_len)
        self._fill(mm.proc.mm, start, end)
        mm_.merge_range(mm.proc.mm, start, end)
        if op.new_addr == op.old_addr:
            self._clear_lazy(mm, end, op.old_addr + mm_.page_align(op.new_len))
            args: tuple[Any, ...] = (op.old_addr, op.old_len, op.new_len, 0, None)
        else:
            flags = mm_.MREMAP_MAYMOVE | mm_.MREMAP_FIXED
            args = (op.old_addr, op.old_len, op.new_len, flags, op.new_addr)
        self._syscall("mremap", mm.proc.mremap, *args)

    def _brk(self, op: Brk) -> None:
        mm = self._mm_of(op)
        m = mm.proc.mm
        if op.old is None:  # the first break seen since exec: the kernel's start_brk
            m.start_brk = m.brk = op.new
            return
        if op.new == m.brk:  # a query, or a call the kernel refused
            return
        self._sample(mm)
        if op.new > m.brk:
            self._clear_lazy(mm, mm_.page_align(m.brk), mm_.page_align(op.new))
        self._syscall("brk", mm.proc.brk, op.new)

    def _clear_lazy(self, mm: _Mm, start: int, end: int) -> None:
        """Unmap the "[lazy]" parts of [start, end): the kernel grew a mapping into it."""
        if end <= start:
            return
        for vma in mm.proc.mm.overlapping(start, end):
            if vma.name == LAZY_NAME:
                lo, hi = max(start, vma.start), min(end, vma.end)
                self._syscall("munmap", mm.proc.munmap, lo, hi - lo)

    # -- tasks -----------------------------------------------------------------------------------
    def _clone(self, op: Clone) -> None:
        parent = self._mm_of(op)
        child = op.child_tid
        if op.thread:
            mm = parent
        elif op.share_mm:  # vfork, posix_spawn: the parent's mm until exec
            mm = parent
            self.group_mm[op.child_pid] = mm
            mm.groups.add(op.child_pid)
            self._report(op.child_pid, op.comm)
        else:
            cpu = (parent.proc.cpu + 1) % self.ncpus
            fork = self._syscall("fork", lambda: parent.proc.fork(cpu=cpu))
            if fork is None:
                return
            mm = _Mm(fork)
            mm.groups.add(op.child_pid)
            self.group_mm[op.child_pid] = mm
            self._report(op.child_pid, op.comm)
            self._sample(mm)
        mm.users.add(child)
        self.task_mm[child] = mm
        self.task_group[child] = op.child_pid

    def _exec(self, op: Exec) -> None:
        group = op.pid
        old = self.task_mm.get(op.old_tid)
        if old is None:
            old = self._mm_of(op, exec_first=True)
        r = self._report(group, op.comm)
        r.comm = op.comm
        r.execs += 1
        self._sample(old)
        for tid in [t for t, g in self.task_group.items() if g == group and t != op.old_tid]:
            mm = self.task_mm.pop(tid, None)  # de_thread(): the other threads are gone
            if mm is not None:
                mm.users.discard(tid)
            del self.task_group[tid]
        self.task_mm.pop(op.old_tid, None)
        self.task_group.pop(op.old_tid, None)
        old.users.discard(op.old_tid)
        old.groups.discard(group)
        if not old.users and old.proc.alive:
            old.proc.exec(op.comm, stack=False)  # exec_mmap + mmput of the old mm
            new = old
        else:
            new = self._new_mm(op.comm)  # the old mm stays with its other users
        new.users.add(op.tid)
        new.groups.add(group)
        self.task_mm[op.tid] = new
        self.task_group[op.tid] = group
        self.group_mm[group] = new
        area = self.arg_pages.get(op.line)
        if area is not None:
            self._copy_strings(new, *area)

    def _copy_strings(self, mm: _Mm, lo: int, hi: int) -> None:
        """The stack pages execve's ``copy_strings`` (and ``copy_string_kernel`` for the
        filename) filled with the argument and environment strings, ``[lo, hi)``: the
        kernel writes them through ``get_user_pages`` into the new mm (``get_arg_page``),
        so no page fault of the trace shows them; each is a write fault here, in a
        "[lazy]" stack VMA like the rest of the kernel-made stack."""
        with mm.proc.kernel():
            for addr in range(lo & ~(PAGE_SIZE - 1), hi, PAGE_SIZE):
                self._fault_in(mm.proc.mm, addr, 2)

    def _exit(self, op: Exit) -> None:
        mm = self.task_mm.get(op.tid) or self._mm_of(op)
        del self.task_mm[op.tid]
        self.task_group.pop(op.tid, None)
        if not op.group_dead:
            self._release(mm, op.tid, None)
            return
        r = self._report(op.pid, op.comm)
        r.exited = True
        r.exit_code = op.exit_code
        r.pt_pages_at_exit = self._sample(mm)
        r.shared_mm_at_exit = len(mm.groups) > 1
        for tid in [t for t, g in self.task_group.items() if g == op.pid]:
            self.task_group.pop(tid)  # threads whose exit the trace lacks
            other = self.task_mm.pop(tid, None)
            if other is not None:
                other.users.discard(tid)
        if self.group_mm.get(op.pid) is mm:
            del self.group_mm[op.pid]
        self._release(mm, op.tid, op.pid)

    def _skip(self, op: Skipped) -> None:
        reason = op.reason
        if reason.startswith("perf lost"):
            reason = _LOST
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def replay_events(
    machine: Any,
    events: Iterable[Event],
    *,
    file: str | None = None,
    lazy: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    arg_areas: Mapping[int, tuple[int, int]] | None = None,
) -> ReplayResult:
    """Replay parsed trace records on ``machine``; the per-process result.

    ``lazy=False`` leaves out the VMAs for mappings the trace does not show (faults
    there are refused): a control for what they contribute. ``progress(line, lines,
    label)`` is called every :data:`PROGRESS_EVERY` operations with the trace line
    reached. ``arg_areas`` (``kpsim record --vmpte``'s ``FILE.args.json``: thread-group
    id -> ``(arg_start, env_end)`` of its mm at exit) places the strings its last exec
    copied onto the new stack (:func:`exec_arg_pages`).
    """
    evs = events if isinstance(events, list) else list(events)
    pages = exec_arg_pages(evs, arg_areas) if arg_areas else None
    r = Replayer(machine, lazy=lazy, arg_pages=pages)
    ops: Iterable[MemOp] = memory_ops(evs, file=file)
    if progress is not None and evs:
        ops = _reporting(ops, evs[-1].line, progress)
    r.run(ops)
    return r.result(len(evs))


def exec_arg_pages(
    evs: Sequence[Event], areas: Mapping[int, tuple[int, int]]
) -> dict[int, tuple[int, int]]:
    """Trace line of each thread group's last exec -> the stack range its strings fill.

    ``areas`` holds each group's ``arg_start``/``env_end`` at exit, i.e. of its last
    exec. Above ``env_end`` the kernel put the filename (``copy_string_kernel``, first,
    at the top) and the stack's top word, so the range is ``[arg_start, env_end +
    len(filename) + 1 + 8)``.
    """
    last: dict[int, ProcessExec] = {}
    for ev in evs:
        if isinstance(ev, ProcessExec):
            last[ev.tid] = ev
    out = {}
    for group, (arg_start, env_end) in areas.items():
        ex = last.get(group)
        if ex is not None:
            top = env_end + len(ex.filename.encode()) + 1 + 8
            out[ex.line] = (arg_start, top)
    return out


#: Operations between two ``progress`` calls of :func:`replay_events`.
PROGRESS_EVERY = 2048


def _reporting(
    ops: Iterable[MemOp], lines: int, progress: Callable[[int, int, str], None]
) -> Iterator[MemOp]:
    """``ops`` unchanged, calling ``progress`` with the line reached now and then."""
    for i, op in enumerate(ops):
        if not i % PROGRESS_EVERY:
            progress(op.line, lines, "replay")
        yield op
    progress(lines, lines, "replay")


def replay_ops(machine: Any, ops: Iterator[MemOp] | list[MemOp]) -> ReplayResult:
    """Replay already resolved operations on ``machine``."""
    r = Replayer(machine)
    r.run(ops)
    return r.result()
