"""A soak: a long random stream of kernel operations, with or without fault injection.

Each operation is drawn from a seeded ``random.Random``: user faults (reads and
writes, single pages and ranges), fork, exec, exit, munmap, mremap (moves and
growth), mprotect, madvise (``MADV_DONTNEED``), vmalloc/vfree and
vm_map_ram/vm_unmap_ram churn, linear-map attribute changes on kernel pages
(``set_memory_ro``/``rw``, ``set_direct_map_invalid_noflush``/``default``), memory
pressure (a hog that takes most free memory in large blocks, then gives it back, and
direct reclaim through the shrinkers) and CPU migration. An operation that runs out
of memory (``-ENOMEM`` from a system call, ``VM_FAULT_OOM`` from a fault, a NULL or
-ENOMEM from a kernel allocation) is counted and the stream goes on, as a kernel
under fault injection must; anything else (a model exception) propagates.

``check(phase)`` runs every ``audit_every`` operations and after the teardown (the
audit plugs in there: workloads cannot import the audit layer). The teardown exits
every process and frees every kernel allocation; :func:`page_balance` then compares
the free pages with those at the start, after the kernel tables the run made (linear
map splits, vmalloc tables) and the pages kept by a protected allocator's cache are
accounted for: a page neither free nor accounted is a page lost.

Models no single kernel function; what it drives is in :mod:`kpsim.mm.process`,
:mod:`kpsim.mm.vmalloc` and ``arch/arm64/mm/pageattr.c``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from kpsim.errors import OutOfMemory
from kpsim.machine.boot import Machine
from kpsim.mm import madvise as madv
from kpsim.mm import mmap as mm_
from kpsim.mm.gfp import GFP_KERNEL, Gfp
from kpsim.mm.mm_types import SyscallError
from kpsim.mm.process import Process, mm_context
from kpsim.mm.vmalloc import vfree, vm_map_ram, vm_unmap_ram, vmalloc

PAGE = 4096
MiB = 1 << 20
RW = mm_.PROT_READ | mm_.PROT_WRITE
MAX_PROCS = 6
MAX_REGIONS = 6
#: the operations and their weights
OPS: tuple[tuple[str, int], ...] = (
    ("fault", 30),
    ("touch_range", 8),
    ("mmap", 10),
    ("munmap", 6),
    ("mremap", 4),
    ("mprotect", 4),
    ("madvise", 4),
    ("fork", 4),
    ("exec", 2),
    ("exit", 2),
    ("vmalloc", 6),
    ("vm_map_ram", 2),
    ("set_memory", 6),
    ("pressure", 1),
    ("migrate", 6),
)
_NAMES = tuple(n for n, _ in OPS)
_WEIGHTS = tuple(w for _, w in OPS)
_CUM_WEIGHTS = tuple(sum(_WEIGHTS[: i + 1]) for i in range(len(_WEIGHTS)))


@dataclass
class SoakResult:
    """What ran: operations by name, those that met -ENOMEM, audits made."""

    ops: Counter[str] = field(default_factory=Counter)
    enomem: Counter[str] = field(default_factory=Counter)
    audits: int = 0
    balance: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "operations": self.total,
            "ops": dict(sorted(self.ops.items())),
            "enomem": dict(sorted(self.enomem.items())),
            "audits": self.audits,
            "balance": dict(self.balance),
        }


@dataclass
class _Region:
    addr: int
    length: int
    writable: bool = True


@dataclass
class _Proc:
    p: Process
    regions: list[_Region] = field(default_factory=list)


def _cached(m: Machine) -> int:
    kp = m.kpkeys
    fn = getattr(kp, "kpkeys_cached_pfns", None)
    return len(fn()) if fn is not None else 0


def _kernel_tables(m: Machine) -> int:
    return sum(
        1
        for i in m.k.pgtable.live.values()
        if i.owner == "kernel" and i.source == "pagetable_alloc"
    )


def page_balance(m: Machine) -> dict[str, int]:
    """The pages the allocator can account for: free, cached keyed, kernel tables."""
    free = int(m.k.page_alloc.nr_free)
    cached, tables = _cached(m), _kernel_tables(m)
    return {"free": free, "cached": cached, "kernel_tables": tables, "sum": free + cached + tables}


class Soak:
    """The state of one soak (see module docstring)."""

    def __init__(self, m: Machine, seed: int) -> None:
        self.m = m
        self.k = m.k
        self.r = random.Random(seed)
        self.ncpu = m.config.cpus
        fi = m.k.fault_inject
        with fi.suspended() if fi is not None else nullcontext():
            self.ctx = mm_context(m.k, m.arch)  # zero pages: Linux makes them at boot
        self.procs: list[_Proc] = []
        self.vmallocs: list[int] = []
        self.maps: list[tuple[int, list[int]]] = []
        self.kpages: list[tuple[int, str]] = []  # (pfn, attribute state)
        self.hog: list[tuple[int, int]] = []
        self.res = SoakResult()
        self._ops: dict[str, Callable[[], None]] = {n: getattr(self, f"op_{n}") for n in _NAMES}

    # -- the stream ---------------------------------------------------------------------
    def step(self) -> None:
        op = self.r.choices(_NAMES, cum_weights=_CUM_WEIGHTS)[0]
        self.res.ops[op] += 1
        try:
            self._ops[op]()
        except (SyscallError, OutOfMemory) as err:
            if isinstance(err, SyscallError) and err.errno != 12:
                self.res.ops[f"{op}_refused"] += 1  # EINVAL, EFAULT...: a refused call
            else:
                self.res.enomem[op] += 1

    def _proc(self) -> _Proc | None:
        if not self.procs:
            self.op_spawn()
        return self.r.choice(self.procs) if self.procs else None

    def op_spawn(self) -> None:
        p = Process.create(self.ctx, f"soak{len(self.procs)}", cpu=self.r.randrange(self.ncpu))
        self.procs.append(_Proc(p))

    def op_mmap(self) -> None:
        sp = self._proc()
        if sp is None or len(sp.regions) >= MAX_REGIONS:
            return
        length = self.r.choice((1, 2, 4, 16, 64, 512, 1024)) * PAGE
        flags = mm_.MAP_PRIVATE | mm_.MAP_ANONYMOUS
        if self.r.random() < 0.15:
            flags |= mm_.MAP_POPULATE
        addr = sp.p.mmap(None, length, RW, flags)
        sp.regions.append(_Region(addr, length))

    def _region(self) -> tuple[_Proc, _Region] | None:
        sp = self._proc()
        if sp is None or not sp.regions:
            return None
        return sp, self.r.choice(sp.regions)

    def op_fault(self) -> None:
        got = self._region()
        if got is None:
            self.op_mmap()
            return
        sp, rg = got
        write = rg.writable and self.r.random() < 0.7
        sp.p.touch(rg.addr + self.r.randrange(rg.length // PAGE) * PAGE, write)

    def op_touch_range(self) -> None:
        got = self._region()
        if got is not None:
            sp, rg = got
            write = rg.writable and self.r.random() < 0.7
            sp.p.touch_range(rg.addr, rg.length, PAGE, write=write)

    def op_munmap(self) -> None:
        got = self._region()
        if got is None:
            return
        sp, rg = got
        sp.regions.remove(rg)
        if rg.length > PAGE and self.r.random() < 0.5:  # part of it: the rest stays mapped
            half = (rg.length // PAGE // 2) * PAGE
            sp.p.munmap(rg.addr, half)
            sp.regions.append(_Region(rg.addr + half, rg.length - half, rg.writable))
        else:
            sp.p.munmap(rg.addr, rg.length)

    def op_mremap(self) -> None:
        got = self._region()
        if got is None:
            return
        sp, rg = got
        new_len = rg.length * self.r.choice((1, 2))
        new = sp.p.mremap(rg.addr, rg.length, new_len, mm_.MREMAP_MAYMOVE)
        rg.addr, rg.length = new, new_len

    def op_mprotect(self) -> None:
        got = self._region()
        if got is not None:
            sp, rg = got
            prot = self.r.choice((RW, RW, mm_.PROT_READ))
            sp.p.mprotect(rg.addr, rg.length, prot)
            rg.writable = prot == RW

    def op_madvise(self) -> None:
        got = self._region()
        if got is not None:
            sp, rg = got
            sp.p.madvise(rg.addr, rg.length, madv.MADV_DONTNEED)

    def op_fork(self) -> None:
        sp = self._proc()
        if sp is None or len(self.procs) >= MAX_PROCS:
            return
        child = sp.p.fork(cpu=self.r.randrange(self.ncpu))
        self.procs.append(_Proc(child, [_Region(r.addr, r.length, r.writable) for r in sp.regions]))

    def op_exec(self) -> None:
        sp = self._proc()
        if sp is not None:
            sp.regions.clear()
            sp.p.exec()

    def op_exit(self) -> None:
        if len(self.procs) > 1:
            sp = self.procs.pop(self.r.randrange(len(self.procs)))
            sp.p.exit()

    def op_migrate(self) -> None:
        sp = self._proc()
        if sp is not None:
            sp.p.run(self.r.randrange(self.ncpu))

    def op_vmalloc(self) -> None:
        with self.m.arch.on_cpu(self.r.randrange(self.ncpu)):
            if self.vmallocs and (len(self.vmallocs) > 8 or self.r.random() < 0.5):
                vfree(self.k, self.vmallocs.pop(self.r.randrange(len(self.vmallocs))))
                return
            size = self.r.choice((1, 2, 3, 8, 17, 64)) * PAGE
            addr = vmalloc(self.k, size)
            if not addr:
                raise OutOfMemory("vmalloc")
            self.vmallocs.append(addr)

    def op_vm_map_ram(self) -> None:
        if self.maps and self.r.random() < 0.6:
            addr, pfns = self.maps.pop()
            vm_unmap_ram(self.k, addr, len(pfns))
            self._free_pages(pfns)
            return
        pfns = []
        for _ in range(self.r.choice((1, 4, 16))):
            pfn = self.k.page_alloc.alloc_pages(GFP_KERNEL)
            if pfn is None:
                self._free_pages(pfns)
                raise OutOfMemory("vm_map_ram pages")
            pfns.append(pfn)
        addr = vm_map_ram(self.k, pfns)
        if not addr:
            self._free_pages(pfns)
            raise OutOfMemory("vm_map_ram")
        self.maps.append((addr, pfns))

    def _free_pages(self, pfns: list[int]) -> None:
        for pfn in pfns:
            self.k.page_alloc.free_pages(pfn)

    def op_set_memory(self) -> None:
        """A kernel page whose linear alias goes read-only or invalid, then back."""
        arch = self.m.arch
        if self.kpages and (len(self.kpages) > 8 or self.r.random() < 0.5):
            pfn, state = self.kpages.pop(self.r.randrange(len(self.kpages)))
            if self._restore(pfn, state):
                self.kpages.append((pfn, state))  # still changed: try again later
                raise OutOfMemory("set_memory restore")
            self.k.page_alloc.free_pages(pfn)
            return
        pfn = self.k.page_alloc.alloc_pages(GFP_KERNEL)
        if pfn is None:
            raise OutOfMemory("set_memory page")
        state = self.r.choice(("ro", "invalid"))
        va = arch.layout.pfn_to_virt(pfn)
        ret = (
            arch.set_memory_ro(va, 1) if state == "ro" else arch.set_direct_map_invalid_noflush(pfn)
        )
        if ret:  # nothing changed: the page goes back as it came
            self.k.page_alloc.free_pages(pfn)
            raise OutOfMemory(f"set_memory_{state}")
        if state == "invalid":  # secretmem's flush after the _noflush call
            arch.flush_tlb_kernel_range(va, va + PAGE)
        self.kpages.append((pfn, state))

    def _restore(self, pfn: int, state: str) -> int:
        arch = self.m.arch
        if state == "ro":
            return int(arch.set_memory_rw(arch.layout.pfn_to_virt(pfn), 1))
        ret = int(arch.set_direct_map_default_noflush(pfn))
        if not ret:
            va = arch.layout.pfn_to_virt(pfn)
            arch.flush_tlb_kernel_range(va, va + PAGE)
        return ret

    def op_pressure(self) -> None:
        """Take most free memory in large blocks (or give it back), then reclaim."""
        pa = self.k.page_alloc
        if self.hog:
            for pfn, order in self.hog:
                pa.free_pages(pfn, order)
            self.hog.clear()
            return
        target = int(pa.nr_free * self.r.uniform(0.6, 0.95))
        taken = 0
        while taken < target:
            pfn = pa.alloc_pages(GFP_KERNEL | Gfp.NOWARN, 9)
            if pfn is None:
                break
            self.hog.append((pfn, 9))
            taken += 512
        self.k.counters["soak_pressure_pages"] += taken

    # -- teardown -----------------------------------------------------------------------
    def teardown(self) -> None:
        """Everything the soak holds goes back; the hog first so that exits can work."""
        fi = self.k.fault_inject
        if fi is not None:
            with fi.suspended():
                self._teardown()
        else:
            self._teardown()

    def _teardown(self) -> None:
        pa = self.k.page_alloc
        for pfn, order in self.hog:
            pa.free_pages(pfn, order)
        self.hog.clear()
        for sp in self.procs:
            sp.p.exit()
        self.procs.clear()
        for addr in self.vmallocs:
            vfree(self.k, addr)
        self.vmallocs.clear()
        for addr, pfns in self.maps:
            vm_unmap_ram(self.k, addr, len(pfns))
            self._free_pages(pfns)
        self.maps.clear()
        for pfn, state in self.kpages:
            if self._restore(pfn, state):
                raise OutOfMemory(f"set_memory restore of pfn {pfn:#x} at teardown")
            pa.free_pages(pfn)
        self.kpages.clear()


def soak(
    m: Machine,
    ops: int,
    *,
    seed: int = 0,
    audit_every: int = 0,
    check: Callable[[str], Any] | None = None,
) -> SoakResult:
    """Run ``ops`` random operations on ``m``, then tear everything down."""
    s = Soak(m, seed)
    before = page_balance(m)
    for i in range(ops):
        s.step()
        if check is not None and audit_every and (i + 1) % audit_every == 0:
            check(f"op {i + 1}")
            s.res.audits += 1
    s.teardown()
    after = page_balance(m)
    s.res.balance = {
        "free_before": before["free"],
        "free_after": after["free"],
        "accounted_before": before["sum"],
        "accounted_after": after["sum"],
        "lost": before["sum"] - after["sum"],
    }
    if check is not None:
        check("end")
        s.res.audits += 1
    return s.res
