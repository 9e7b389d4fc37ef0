"""A built-in mixed workload for ``kpsim audit``: every way page tables come and go.

Processes on several CPUs fault (anonymous reads and writes, file-backed private and
shared mappings, THPs), fork (children fault, break COW, unmap, exec and exit),
munmap (partly and wholly), mprotect, madvise(MADV_DONTNEED), mremap (grow in place
or move) and brk, with context switches between them; the kernel side churns
vmalloc/vfree and vm_map_ram/vm_unmap_ram. While this runs, interrupts are injected
in the middle of batched (lazy-MMU) sections, and each handler frees a page table
(modelling the RCU callback of ``tlb_remove_table``: a detached table queued for
deferred freeing is freed from softirq context). What POR_EL1 holds before the
interrupt, inside the handler, after its return and when the section ends is
recorded for each interrupt (:class:`IrqRecord`).

``scale`` multiplies the number of processes (2 + scale, each mapping about 20 MiB)
and the vmalloc churn. Deterministic for a given ``seed`` and ``scale``. A
``check(phase)`` callback runs at each phase boundary, when no section is open and no
deferred table is pending (the audit plugs in there: workloads cannot import the
audit layer).

Models no single kernel function; the system calls it drives are in
:mod:`kpsim.mm.process`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kpsim.machine.boot import Machine
from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL
from kpsim.mm.mm_types import TASK_SIZE
from kpsim.mm.process import STACK_TOP, Process, mm_context
from kpsim.mm.vmalloc import vfree, vm_map_ram, vm_unmap_ram, vmalloc

MiB = 1 << 20
PAGE = 4096
RW = mm_.PROT_READ | mm_.PROT_WRITE
STACK_PROBE = STACK_TOP - 2 * PAGE  # below TASK_SIZE; an arch with less user space shifts it


@dataclass
class IrqRecord:
    """One injected interrupt: the CPU, the table it freed and POR_EL1 around it."""

    cpu: int
    freed_pfn: int
    in_lazy_section: bool
    por_before: int
    por_in_handler: int = -1
    por_after_return: int = -1
    por_at_section_end: int = -1

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "freed_pfn": f"{self.freed_pfn:#x}",
            "in_lazy_section": self.in_lazy_section,
            "por_before": f"{self.por_before:#x}",
            "por_in_handler": f"{self.por_in_handler:#x}",
            "por_after_return": f"{self.por_after_return:#x}",
            "por_at_section_end": f"{self.por_at_section_end:#x}",
        }


@dataclass
class MixedResult:
    ops: Counter[str] = field(default_factory=Counter)
    irqs: list[IrqRecord] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "ops": dict(sorted(self.ops.items())),
            "interrupts": [r.as_dict() for r in self.irqs],
            "phases": list(self.phases),
        }


class IrqInjector:
    """Fires an interrupt from ``arch.irq_hook`` during a batched section.

    :meth:`arm` allocates a kernel PTE table, detached, that stands for a table queued
    for RCU freeing; the next eligible page-table write (task context, in a lazy-MMU
    section, after a random countdown) takes an interrupt on its CPU whose handler
    frees it. :meth:`drain` frees a still-pending one from task context
    (``rcu_barrier``).
    """

    def __init__(self, m: Machine, rng: random.Random, result: MixedResult) -> None:
        self.m = m
        self.rng = rng
        self.result = result
        self.victim: int | None = None
        self.countdown = 0
        self.record: IrqRecord | None = None
        self._prev_hook: Callable[[], None] | None = None

    def install(self) -> None:
        self._prev_hook = self.m.arch.irq_hook
        self.m.arch.irq_hook = self._hook

    def uninstall(self) -> None:
        self.drain()
        self.m.arch.irq_hook = self._prev_hook

    def arm(self) -> None:
        if self.victim is None:
            pfn = self.m.k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
            if pfn is not None:
                self.victim = pfn
                self.countdown = self.rng.randrange(1, 24)

    def drain(self) -> None:
        if self.victim is not None:
            self.m.k.pgtable.free_table(self.victim)
            self.victim = None
            self.result.ops["deferred_table_free_task"] += 1

    def _hook(self) -> None:
        if self._prev_hook is not None:
            self._prev_hook()
        arch = self.m.arch
        if self.victim is None or arch.in_interrupt() or not arch.current().tif_lazy_mmu:
            return
        self.countdown -= 1
        if self.countdown > 0:
            return
        victim, self.victim = self.victim, None
        cpu_id = arch.cpu_id
        rec = IrqRecord(cpu_id, victim, True, arch.pkey_reg(cpu_id))

        def handler() -> None:
            rec.por_in_handler = arch.pkey_reg(cpu_id)
            self.m.k.pgtable.free_table(victim)  # a page-table free in interrupt context

        arch.interrupt(cpu_id, handler)
        rec.por_after_return = arch.pkey_reg(cpu_id)
        self.result.irqs.append(rec)
        self._watch_section_end(rec)

    def _watch_section_end(self, rec: IrqRecord) -> None:
        """Record POR_EL1 when the interrupted lazy-MMU section closes."""
        arch: Any = self.m.arch
        task = arch.current()
        orig = type(arch).arch_leave_lazy_mmu_mode

        def leave() -> None:
            orig(arch)
            if task.lazy_mmu_nesting == 0:
                rec.por_at_section_end = arch.pkey_reg(arch.cpu_id)
                del arch.arch_leave_lazy_mmu_mode

        arch.arch_leave_lazy_mmu_mode = leave


def mixed_workload(
    m: Machine,
    *,
    seed: int = 0,
    scale: int = 1,
    check: Callable[[str], None] | None = None,
) -> MixedResult:
    """Run the mixed workload on a booted machine (see module docstring)."""
    rng = random.Random(seed)
    res = MixedResult()
    ctx = mm_context(m.k, m.arch)
    ctx.thp = "madvise"
    ncpu = len(m.hw.cpus)
    irq = IrqInjector(m, rng, res)
    irq.install()

    def phase(name: str) -> None:
        irq.drain()
        res.phases.append(name)
        if check is not None:
            check(name)

    try:
        # -- 1. processes fault in every kind of mapping -------------------------------------
        irq.arm()
        procs: list[tuple[Process, dict[str, int]]] = []
        for i in range(2 + scale):
            p = Process.create(m, f"p{i}", cpu=i % ncpu)
            procs.append((p, _populate(p, rng, res)))
        phase("faults")

        # -- 2. fork: children fault, break COW, unmap, exec, exit ---------------------------
        irq.arm()
        children: list[Process] = []
        for j, (p, r) in enumerate(procs):
            child = p.fork(cpu=(p.cpu + 1) % ncpu)
            res.ops["fork"] += 1
            child.touch_range(r["anon"], 2 * MiB, stride=PAGE * rng.choice((1, 2, 4)), write=True)
            child.touch_range(r["file"], MiB, write=False)
            child.touch(r["thp"] + PAGE, write=True)  # COW of a THP (split)
            child.munmap(r["anon"] + 4 * MiB, 2 * MiB)
            res.ops["cow_faults"] += 1
            if j % 2:
                child.exec("sh")
                child.touch_range(child.mmap(None, MiB), MiB, write=True)
                res.ops["exec"] += 1
            children.append(child)
        phase("fork")

        # -- 3. system calls that change or drop tables --------------------------------------
        irq.arm()
        for p, r in procs:
            p.run(rng.randrange(ncpu))  # migrate: a context switch on another CPU
            anon = r["anon"]
            p.mprotect(anon, 2 * MiB, mm_.PROT_READ)
            p.mprotect(anon, 2 * MiB, RW)
            p.touch(anon + PAGE, write=True)
            p.madvise(anon + 2 * MiB, MiB, madv.MADV_DONTNEED)
            p.touch_range(anon + 2 * MiB, 256 * 1024, write=True)
            p.munmap(anon + 4 * MiB, 2 * MiB)  # a whole PTE table's span
            p.munmap(anon + 7 * MiB + 3 * PAGE, 5 * PAGE)  # a few pages
            new = p.mremap(r["small"], 64 * 1024, 3 * MiB, mm_.MREMAP_MAYMOVE)
            p.touch_range(new, 3 * MiB, stride=16 * PAGE, write=True)
            p.munmap(r["thp"], 4 * MiB)  # THPs with their deposits
            top = p.brk(0)
            p.brk(top - 64 * 1024)
            res.ops["syscalls"] += 9
        phase("syscalls")

        # -- 4. kernel-side churn: vmalloc, vfree, vm_map_ram ---------------------------------
        irq.arm()
        _vmalloc_churn(m, rng, scale, res)
        phase("vmalloc")

        # -- 5. exits: children first, then parents, interleaved with switches ---------------
        irq.arm()
        for child in children:
            child.run(rng.randrange(ncpu))
            probe = STACK_PROBE - (TASK_SIZE - child.mm.ctx.task_size)  # in its [stack]
            child.touch(probe, write=True)  # runs on its new CPU, then exits
            child.exit()
            res.ops["exit"] += 1
        irq.arm()
        for p, r in procs:
            p.touch_range(r["anon"], 2 * MiB, stride=8 * PAGE, write=True)
            p.exit()
            res.ops["exit"] += 1
        phase("exit")
    finally:
        irq.uninstall()
    return res


def _populate(p: Process, rng: random.Random, res: MixedResult) -> dict[str, int]:
    """Map and fault every kind of region in ``p``; return their addresses."""
    ctx = p.ctx
    r: dict[str, int] = {}
    r["anon"] = anon = p.mmap(None, 8 * MiB)
    stride = PAGE * rng.choice((1, 1, 2, 3))
    p.touch_range(anon, 6 * MiB, stride=stride, write=True)  # anonymous write faults
    p.touch_range(anon + 6 * MiB, 2 * MiB, stride=4 * PAGE)  # reads: the zero page
    f = ctx.new_file(2 * MiB)
    r["file"] = p.mmap(None, 2 * MiB, RW, mm_.MAP_PRIVATE, f)
    p.touch_range(r["file"], 2 * MiB)  # file read faults
    p.touch_range(r["file"], 256 * 1024, stride=8 * PAGE, write=True)  # private COW
    r["shared"] = p.mmap(None, MiB, RW, mm_.MAP_SHARED | mm_.MAP_ANONYMOUS)
    p.touch_range(r["shared"], MiB, stride=2 * PAGE, write=True)
    r["thp"] = thp = p.mmap(None, 4 * MiB)
    p.madvise(thp, 4 * MiB, madv.MADV_HUGEPAGE)
    p.touch(thp, write=True)  # one THP fault each
    p.touch(thp + 2 * MiB, write=False)  # the huge zero page
    r["small"] = p.mmap(None, 64 * 1024)
    p.touch_range(r["small"], 64 * 1024, write=True)
    base = p.brk(0)
    p.brk(base + 256 * 1024)
    p.touch_range(base, 256 * 1024, stride=4 * PAGE, write=True)
    res.ops["processes"] += 1
    res.ops["mappings"] += 5
    return r


def _vmalloc_churn(m: Machine, rng: random.Random, scale: int, res: MixedResult) -> None:
    k = m.k
    live: list[int] = []
    ncpu = len(m.hw.cpus)
    for i in range(48 * scale):
        with m.arch.on_cpu(i % ncpu):
            if live and rng.random() < 0.4:
                vfree(k, live.pop(rng.randrange(len(live))))
                res.ops["vfree"] += 1
            else:
                addr = vmalloc(k, rng.choice((1, 2, 3, 8, 17, 64)) * PAGE)
                if addr:
                    live.append(addr)
                    res.ops["vmalloc"] += 1
    huge = vmalloc(k, 4 * MiB, huge=True)
    if huge:
        live.append(huge)
        res.ops["vmalloc_huge"] += 1
    for _ in range(4 * scale):
        pfns = [k.page_alloc.alloc_pages(GFP_KERNEL, 0) for _ in range(rng.randrange(1, 40))]
        got = [p for p in pfns if p is not None]
        addr = vm_map_ram(k, got)
        if addr:
            vm_unmap_ram(k, addr, len(got))
            res.ops["vm_map_ram"] += 1
        for p in got:
            k.page_alloc.free_pages(p, 0)
    for addr in live:
        vfree(k, addr)
        res.ops["vfree"] += 1
