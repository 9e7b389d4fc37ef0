"""Processes for scripts and workloads: create, exec, fork, exit, run, and user access.

Ties a :class:`~kpsim.mm.sched.Task` to an :class:`~kpsim.mm.mm_types.MmStruct` and
runs it on a simulated CPU (``switch_to`` loads TTBR0 and the ASID). System calls run
as kernel code on the process's CPU with the process current (so lazy-MMU sections
and kpkeys guards see the right task). User accesses (:meth:`Process.touch`) are
loads/stores at EL0 through the CPU's MMU; a fault enters ``handle_mm_fault`` and the
access is retried, as the exception return would.

``exit`` follows ``exit_mmap`` (pt-lifecycle.md rule 9): zap every VMA, free every
table (``free_pgtables`` with floor 0 and no ceiling), then the PGD; ``exec`` builds a
new mm and tears the old one down the same way (rule 8).

Left out: threads (one task per mm), signals (an unresolvable fault raises
:class:`~kpsim.mm.mm_types.SegmentationFault`), the stack's VM_GROWSDOWN growth.
"""

from __future__ import annotations

import errno
import sys
from contextlib import AbstractContextManager
from typing import Any, Final

from kpsim.errors import OutOfMemory, VmFaultOom
from kpsim.mm import fault_batch
from kpsim.mm import fork as fork_mod
from kpsim.mm import madvise as madvise_mod
from kpsim.mm import memory as m
from kpsim.mm import mmap as mmap_mod
from kpsim.mm.arch_ops import ArchOps
from kpsim.mm.kernel import Kernel
from kpsim.mm.mm_types import (
    PAGE_SIZE,
    SPAN_SHIFT,
    TASK_SIZE,
    FileRef,
    MmContext,
    MmStruct,
    SegmentationFault,
    SyscallError,
    Vma,
    VmFlags,
)
from kpsim.mm.mmu_gather import MmuGather
from kpsim.mm.sched import Task

STACK_SIZE: Final = 132 << 10  # what a fresh process has faulted: a few pages below the top
STACK_TOP: Final = TASK_SIZE - (16 << 20)
_CTX_ATTR: Final = "user_mm_context"


def mm_context(k: Kernel, arch: ArchOps, **options: Any) -> MmContext:
    """The machine's :class:`MmContext` (one per kernel, made on first use)."""
    ctx = getattr(arch, _CTX_ATTR, None)
    if not isinstance(ctx, MmContext) or ctx.k is not k:
        ctx = MmContext(k, arch, **options)
        for cpu in range(_ncpus(arch)):
            with arch.on_cpu(cpu):
                ctx.idle.append(arch.current())
        setattr(arch, _CTX_ATTR, ctx)  # lives as long as the machine
    elif "pt_reclaim" in options and options["pt_reclaim"] is not None:
        ctx.pt_reclaim = bool(options["pt_reclaim"])
    return ctx


def _ncpus(arch: Any) -> int:
    return len(arch.percpu) if hasattr(arch, "percpu") else 1


def exit_mmap(mm: MmStruct) -> None:
    """``exit_mmap``: zap and free everything in one full-mm gather (one ASID flush
    at the end, none for the zaps), then ``pgd_free``."""
    ctx = mm.ctx
    vmas = list(mm.vmas)
    tlb = MmuGather(mm, fullmm=True)  # tlb_gather_mmu_fullmm
    m.unmap_vmas(mm, vmas, tlb)
    mm.vmas.clear()
    mm.starts.clear()
    if vmas:
        m.free_pgtables(mm, vmas[0].start, vmas[-1].end, 0, None, tlb)
    leftover = mm.pgtables_pages()
    if leftover:
        ctx.k.warn("exit_mmap", f"{mm.owner}: {leftover} tables outside every VMA")
        for level in (3, 2, 1):
            for slot in sorted(mm.tables[level]):
                m.free_table(mm, level, slot)
                tlb.free_table(level, slot << SPAN_SHIFT[level])
    tlb.finish()  # tlb_finish_mmu: one ASID flush (arm64 tlb_flush, fullmm)
    ctx.k.pgtable.free_table(mm.pgd_pfn)
    ctx.free_asid(mm.asid)


class KernelSection:
    """The context manager :meth:`Process.kernel` returns. On entry: refuse an exited
    process, run on its CPU (``arch.on_cpu``) and make it current (``switch_to``)
    unless it is; on exit: leave the CPU section. (A plain class rather than a
    generator-based context manager: the replay enters one per operation.)"""

    __slots__ = ("on", "proc")

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.on: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        if self.on is not None:  # as a generator-based one, not re-entrant
            raise RuntimeError("kernel section entered twice")
        p = self.proc
        if not p.alive:
            raise ProcessLookupError(f"pid {p.task.pid} has exited")
        arch = p.ctx.arch
        on = arch.on_cpu(p.cpu)
        on.__enter__()
        self.on = on
        try:
            if arch.current() is not p.task:
                arch.switch_to(p.cpu, p.task)
        except BaseException:
            self.on = None
            on.__exit__(*sys.exc_info())
            raise

    def __exit__(self, *exc: Any) -> None:
        on, self.on = self.on, None
        if on is not None:
            on.__exit__(*exc)


class Process:
    """A single-threaded simulated process (see module docstring)."""

    def __init__(self, ctx: MmContext, mm: MmStruct, task: Task, cpu: int) -> None:
        self.ctx = ctx
        self.mm = mm
        self.task = task
        self.cpu = cpu
        self.alive = True
        #: operations that ran out of memory: (operation, what failed), oldest first
        self.oom: list[tuple[str, str]] = []

    def _record_oom(self, op: str, err: BaseException) -> None:
        """The process model's record of an -ENOMEM / VM_FAULT_OOM (kept to 64)."""
        self.ctx.k.counters[f"{op}_enomem"] += 1
        if len(self.oom) < 64:
            self.oom.append((op, str(err)))

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def create(
        cls, machine_or_ctx: Any, comm: str = "proc", *, cpu: int = 0, stack: bool = True
    ) -> Process:
        """A new process with an empty mm (and a touched stack page unless ``stack=False``)."""
        ctx = (
            machine_or_ctx
            if isinstance(machine_or_ctx, MmContext)
            else mm_context(machine_or_ctx.k, machine_or_ctx.arch)
        )
        arch = ctx.arch
        with arch.on_cpu(cpu):
            thread = arch.copy_thread(arch.current())
        pid = ctx.next_pid
        ctx.next_pid += 1
        try:
            mm = MmStruct(ctx)
        except OutOfMemory as err:  # mm_alloc -> pgd_alloc failed: fork/exec's -ENOMEM
            ctx.k.counters["create_enomem"] += 1
            raise SyscallError(errno.ENOMEM, f"creating a process: {err}") from None
        p = cls(ctx, mm, Task(pid, comm, mm, thread), cpu)
        if stack:
            try:
                p._setup_stack()
            except OutOfMemory:
                p.exit()  # the new process dies; nothing of it stays
                raise
        return p

    def _setup_stack(self) -> None:
        vm = mmap_mod.VM_DATA_DEFAULT | VmFlags.GROWSDOWN | VmFlags.ACCOUNT
        with self.kernel():
            top = STACK_TOP - (TASK_SIZE - self.ctx.task_size)
            base = top - STACK_SIZE
            self.mm.insert_vma(Vma(base, top, vm, pgoff=base >> 12, name="[stack]"))
        self.touch(top - PAGE_SIZE, write=True)

    def kernel(self) -> KernelSection:
        """Run kernel code for this process on its CPU, with it current."""
        return KernelSection(self)

    def run(self, cpu: int) -> None:
        """Schedule the process on ``cpu`` (``switch_to``). A task runs on one CPU at a
        time: the CPU it leaves switches to its idle task first, so that it holds no
        TTBR0 of an mm that an exec on the new CPU may free."""
        if cpu != self.cpu and self.alive:
            arch = self.ctx.arch
            with arch.on_cpu(self.cpu):
                if arch.current() is self.task:
                    arch.switch_to(self.cpu, self.ctx.idle[self.cpu])
        self.cpu = cpu
        with self.kernel():
            pass

    def fork(self, *, cpu: int | None = None) -> Process:
        """``fork()``: a child with a copy of the address space (rule 7)."""
        with self.kernel():
            try:
                child_mm = fork_mod.dup_mm(self.mm, on_fail=exit_mmap)
            except OutOfMemory as err:  # copy_process fails: -ENOMEM, no child
                self._record_oom("fork", err)
                raise SyscallError(errno.ENOMEM, f"fork: {err}") from None
            thread = self.ctx.arch.copy_thread(self.task)
        pid = self.ctx.next_pid
        self.ctx.next_pid += 1
        task = Task(pid, self.task.comm, child_mm, thread)
        return Process(self.ctx, child_mm, task, self.cpu if cpu is None else cpu)

    def exec(self, comm: str | None = None, *, stack: bool = True) -> None:
        """``execve``: a fresh mm; the old one is torn down completely (rule 8)."""
        old = self.mm
        try:
            new = MmStruct(self.ctx)
        except OutOfMemory as err:  # bprm_mm_init fails before the point of no return
            self._record_oom("exec", err)
            raise SyscallError(errno.ENOMEM, f"exec: {err}") from None
        self.mm = new
        self.task.mm = self.mm
        if comm is not None:
            self.task.comm = comm
        with self.ctx.arch.on_cpu(self.cpu):
            self.ctx.arch.switch_to(self.cpu, self.ctx.idle[self.cpu])
            self.ctx.arch.switch_to(self.cpu, self.task)
            exit_mmap(old)
        if stack:
            self._setup_stack()

    def exit(self) -> None:
        """``do_exit``: ``exit_mm`` clears ``current->mm`` (the task tears its mm down as
        a lazy-TLB kernel thread: a switch away and back does not load it again), then
        ``exit_mmap`` and the switch to the idle task (rule 9)."""
        with self.kernel():
            self.task.mm = None
            exit_mmap(self.mm)
            self.ctx.arch.switch_to(self.cpu, self.ctx.idle[self.cpu])
        self.alive = False

    # -- user access --------------------------------------------------------------------
    def touch(self, addr: int, write: bool = False, value: int = 0xA5) -> None:
        """One user byte access at EL0; faults are handled and the access retried."""
        arch = self.ctx.arch
        if self.alive and getattr(arch, "cpu_id", None) == self.cpu and arch.current() is self.task:
            self._access(addr, write, value)  # already running here: what kernel() sets up
            return
        with self.kernel():
            self._access(addr, write, value)

    def touch_range(
        self, addr: int, length: int, stride: int = PAGE_SIZE, write: bool = False
    ) -> None:
        with self.kernel():
            fault_batch.touch_range(self.mm, addr, length, stride, write, 0xA5, self._access)

    def _access(self, addr: int, write: bool, value: int) -> None:
        arch = self.ctx.arch
        for _ in range(3):
            if arch.user_access(addr, write, value):
                return
            try:
                m.handle_mm_fault(self.mm, addr, write)
            except OutOfMemory as err:  # VM_FAULT_OOM
                self._record_oom("fault", err)
                raise VmFaultOom(f"pid {self.task.pid}: fault at {addr:#x}: {err}") from None
        raise SegmentationFault(f"pid {self.task.pid}: access at {addr:#x} keeps faulting")

    def read_byte(self, addr: int) -> int:
        """The byte at ``addr`` as the process sees it (through the page tables)."""
        with self.kernel():
            self._access(addr, False, 0)
            cpu = self.ctx.arch.cpu  # type: ignore[attr-defined]
            return int(cpu.load(addr, 1, 0))

    # -- system calls ---------------------------------------------------------------------
    def mmap(
        self,
        addr: int | None,
        length: int,
        prot: int = 3,
        flags: int = mmap_mod.MAP_PRIVATE | mmap_mod.MAP_ANONYMOUS,
        file: FileRef | None = None,
        pgoff: int = 0,
    ) -> int:
        with self.kernel():
            return mmap_mod.mmap(self.mm, addr, length, prot, flags, file, pgoff)

    def munmap(self, addr: int, length: int) -> None:
        with self.kernel():
            mmap_mod.munmap(self.mm, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        with self.kernel():
            mmap_mod.mprotect(self.mm, addr, length, prot)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        with self.kernel():
            madvise_mod.madvise(self.mm, addr, length, advice)

    def mremap(
        self,
        old: int,
        old_len: int,
        new_len: int,
        flags: int = mmap_mod.MREMAP_MAYMOVE,
        new_addr: int | None = None,
    ) -> int:
        with self.kernel():
            try:
                return mmap_mod.mremap(self.mm, old, old_len, new_len, flags, new_addr)
            except SyscallError as err:
                if err.errno == errno.ENOMEM:
                    self._record_oom("mremap", err)
                raise

    def brk(self, new: int) -> int:
        with self.kernel():
            return mmap_mod.brk(self.mm, new)

    # -- views --------------------------------------------------------------------------
    def pt_pages(self) -> int:
        """``VmPTE / 4``: PTE + PMD + PUD tables (deposited THP tables included)."""
        return self.mm.pgtables_pages()

    def vm_pte_kb(self) -> int:
        return 4 * self.pt_pages()

    def check_tree(self) -> list[str]:
        return m.check_tree(self.mm)


def kunit_vm_mmap(k: Kernel, size: int) -> tuple[Process, int]:
    """KUnit's ``kunit_vm_mmap``: a process with one anonymous read-write mapping of
    ``size`` bytes, its first page faulted in so the tables down to the PTE exist."""
    proc = Process.create(mm_context(k, k.arch), "kunit", stack=False)
    addr = proc.mmap(None, size, mmap_mod.PROT_READ | mmap_mod.PROT_WRITE)
    proc.touch(addr, write=True)
    return proc, addr
