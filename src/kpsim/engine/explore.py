"""``kpsim explore``: inject interrupts, exceptions, context switches and the other CPU at
every point of a workload's guarded page-table paths, and check the protection after
each schedule.

Models nothing in Linux: it is a schedule explorer over the model. The arch code calls
``arch.explore_hook(point)`` (when one is attached) at each point where something else
can happen inside guarded writes and lazy-MMU sections: before and after each
pkey-register write (arm64: POR_EL1, and after its ISB; x86: WRMSR to IA32_PKRS, which
no barrier follows), before and after each table store, around each
``set_memory_pkey`` and each lazy-MMU section, and at the PBA's split-protocol steps.
The machine's arch object answers every architectural question (its pkey register,
its table entries); :data:`STEPS_WITHOUT_MEANING` lists the steps an architecture has
nothing to switch off for.
A *schedule* is a set of ``(point number, injection)`` pairs; point numbers count the
points the workload reaches, in order, outside injected code (so they are the same
from run to run). Injections (:data:`INJECTIONS`) run on the CPU that reached the
point, or on the other CPU.

After each schedule: no legitimate page-table write faulted; every unguarded write
that an injected context tried on a live page-table page faulted (none landed);
the pkey register is at its default-context value on every CPU (``POR_EL1_INIT``,
``PKS_INIT_VALUE``); the pages the schedule keyed and unkeyed
carry the right pkey and the full audit (:func:`kpsim.audit.invariants.audit`) is
clean (every ``audit_every`` schedules and after the last); the PBA's split reserve
never ran dry. Schedules are explored by number of injections (none, one, two...),
exhaustively while a level fits in the budget and by seeded sampling after, so the
first violation found is a shortest one.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kpsim.audit.invariants import audit, linear_pkey, protected_cache_pfns
from kpsim.errors import AccessFault, InputError, KpsimError, OutOfMemory
from kpsim.kpkeys.context import kpkeys_guard
from kpsim.kpkeys.pba import PBA_NR_RESERVED_PAGES, PkeysBlockAllocator
from kpsim.machine.boot import Machine
from kpsim.machine.config import ARCHES, MachineConfig
from kpsim.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES
from kpsim.mm.sched import Task
from kpsim.units import format_size

#: ``--disable`` steps: name -> what is switched off
STEPS: dict[str, str] = {
    "isb-after-por-write": "the ISB after each kpkeys POR_EL1 write (arm64 only)",
    "por-save-on-switch": "the pkey register's save/restore on context switch "
    "(__switch_to: POR_EL1; x86 IA32_PKRS, pks_write_current)",
    "reset-on-entry": "the pkey register's reset on exception entry (POR_EL1_INIT; x86 "
    "PKS_INIT_VALUE, pks_save_pt_regs)",
    "restore-on-return": "the pkey register's restore from pt_regs on exception return "
    "(x86 pks_restore_pt_regs)",
    "in-interrupt-check": "the batching guard's exception rule (v5's in_interrupt(); "
    "enter-leave's POR_EL1 check): the guard then skips whenever TIF_LAZY_MMU is set",
    "tlbi-after-set-memory-pkey": "the TLB flush after set_memory_pkey",
    "reserve-ready-check": "the PBA's kpkeys_ready_for_direct_map_split() under the split "
    "lock (workload split)",
}

#: per architecture, the steps it has nothing to switch off for, and why (``--disable``
#: of one is bad input there, exit 2)
STEPS_WITHOUT_MEANING: dict[str, dict[str, str]] = {
    "arm64": {},
    "x86": {
        "isb-after-por-write": "x86 has no barrier after a kpkeys WRMSR to IA32_PKRS to "
        "switch off (the write is not serialising, but the accesses it governs wait for "
        "it, as after WRPKRU)",
    },
}

#: per architecture, the name of the check that every CPU's pkey register is back at
#: its default-context value after a schedule
AT_REST_CHECK: dict[str, str] = {"arm64": "por-el1-at-rest", "x86": "pkrs-at-rest"}


def check_steps(arch: str, steps: frozenset[str] | set[str]) -> None:
    """Refuse steps unknown, or without a meaning on ``arch`` (``InputError``)."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise InputError(f"unknown step {unknown[0]!r} (steps: {', '.join(STEPS)})")
    for step in sorted(steps):
        why = STEPS_WITHOUT_MEANING.get(arch, {}).get(step)
        if why is not None:
            raise InputError(f"step {step!r} has no meaning on {arch}: {why}")


#: injection -> what it does
INJECTIONS: dict[str, str] = {
    "irq-free": "an IRQ on this CPU whose handler frees a page table",
    "irq-alloc": "an IRQ on this CPU whose handler allocates a page table",
    "sync-alloc": "a synchronous exception at EL1 on this CPU whose handler allocates a "
    "page table (not in_interrupt())",
    "switch": "a context switch to another task, which writes a page table, and back",
    "cpu-guarded": "the other CPU runs a guarded page-table write",
    "cpu-keying": "the other CPU runs set_memory_pkey on a page (a guarded section of "
    "linear-map writes and a TLB flush)",
    "cpu-split": "the other CPU splits a linear-map block (set_memory_ro of a page of an "
    "unused block: the PBA's split protocol and reserve)",
    "cpu-refill": "the other CPU runs a PBA refill (buddy block, set_memory_pkey, cache)",
}

WORKLOADS: dict[str, str] = {
    "guarded-paths": "allocate a PTE table (set_memory_pkey), write entries in a batched "
    "lazy-MMU section, one guarded write outside it, one inside a nested guard, free it "
    "(PTE-mapped linear map; on x86 a 4K direct map)",
    "user": "micromm.fork of 2M (a process maps and populates 2M, forks, the child exits) "
    "then micromm.munmap of 2M: the user-mm paths (fault, copy_page_range, zap, "
    "free_pgtables), their batched stores one point each (PTE-mapped linear map)",
    "split": "on a block-mapped linear map with the PBA, its cache drained to the reserve: "
    "split a linear-map block (set_memory_ro/rw of one of its pages: the split protocol), "
    "allocate two tables (a refill), free them; a fresh boot per schedule",
}

#: the injections each workload uses by default
WORKLOAD_INJECTIONS: dict[str, tuple[str, ...]] = {
    "guarded-paths": (
        "irq-free", "irq-alloc", "sync-alloc", "switch", "cpu-guarded", "cpu-keying",
    ),
    "user": (
        "irq-free", "irq-alloc", "sync-alloc", "switch", "cpu-guarded", "cpu-keying",
    ),
    "split": (
        "irq-free", "irq-alloc", "sync-alloc", "switch", "cpu-guarded", "cpu-split",
        "cpu-refill",
    ),
}  # fmt: skip

Schedule = tuple[tuple[int, str], ...]


DEFAULT_MEMORY = 256 << 20


def _small_machine() -> MachineConfig:
    return MachineConfig(memory=DEFAULT_MEMORY)


@dataclass(frozen=True, slots=True)
class ExploreConfig:
    """What to explore: the machine, the workload and the protective steps switched off."""

    machine: MachineConfig = field(default_factory=_small_machine)
    workload: str = "guarded-paths"
    disabled: frozenset[str] = frozenset()

    @property
    def seed(self) -> int:
        return self.machine.seed


@dataclass(slots=True)
class Violation:
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


@dataclass(slots=True)
class Outcome:
    schedule: Schedule
    violations: list[Violation] = field(default_factory=list)


class _Run:
    """The state of one schedule's run: pending injections, the point counter, what
    the injected contexts saw."""

    __slots__ = ("at", "counter", "depth", "extra_tables", "m", "splits", "stray", "trace")

    def __init__(self, m: Machine, schedule: Schedule, trace: bool) -> None:
        self.m = m
        self.at: dict[int, list[str]] = {}
        for i, kind in schedule:
            self.at.setdefault(i, []).append(kind)
        self.counter = 0
        self.depth = 0
        self.splits = 0
        self.extra_tables: list[int] = []
        self.stray: list[Violation] = []
        self.trace: list[str] | None = [] if trace else None


class Explorer:
    """Boots the machine once and runs schedules on it (rebooting after a violation)."""

    def __init__(self, cfg: ExploreConfig) -> None:
        check_steps(cfg.machine.arch, cfg.disabled)
        if cfg.workload not in WORKLOADS:
            raise InputError(
                f"unknown workload {cfg.workload!r} (workloads: {', '.join(WORKLOADS)})"
            )
        if cfg.machine.cpus < 2:
            raise InputError("explore needs at least 2 CPUs (the other-CPU injections)")
        self.cfg = cfg
        self.boots = 0
        self._run: _Run | None = None
        self._live: list[int] = []  # the workload's live tables (stray-write targets)
        self._freed: list[int] = []  # tables freed during the schedule
        self._victims: list[int] = []  # tables the irq-free handlers free
        self.trace: list[str] | None = None
        self.spare = self.scratch = self.scratch_ptep = self.scratch_level = 0
        self.blocks: list[int] = []
        self.runs = 0
        self.m: Machine
        #: audit findings of the freshly booted machine (before any schedule): reported
        #: once, not held against a schedule
        self.boot_findings: list[str] | None = None
        self.machine_config = self._machine_config()
        self._boot()

    # -- machine -------------------------------------------------------------------
    def _machine_config(self) -> MachineConfig:
        """The machine the workload runs on: ``split`` the PBA on a block map, the others
        a PTE-mapped linear map (on x86 a 4K direct map, as ``debug_pagealloc`` gives:
        x86's default direct map is block-mapped)."""
        mc = self.cfg.machine
        if self.cfg.workload == "split":  # the PBA on a block map, whatever the series
            return dataclasses.replace(mc, linear_map="block", allocator="pba")
        if mc.arch == "x86":
            return dataclasses.replace(mc, linear_map="pte")
        if mc.linear_map != "pte":
            raise InputError(f"workload {self.cfg.workload} needs a PTE-mapped linear map")
        return mc

    def _boot(self) -> Machine:
        self.held: list[int] = []
        m = Machine.boot(self.machine_config)
        if self.boot_findings is None:
            self.boot_findings = [f"{v.invariant}: {v.detail}" for v in audit(m)]
        fi = m.k.fault_inject
        if fi is not None:
            with fi.suspended():  # the explorer's own set-up is not under test
                return self._set_up(m)
        return self._set_up(m)

    def _set_up(self, m: Machine) -> Machine:
        self.m = m
        self.boots += 1
        arch = m.arch
        arch.set_disabled(self.cfg.disabled)
        k = m.k
        spare = k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        spare = _need(spare)
        self.spare = spare
        # A live kernel table: the one holding the linear map's leaf entry for ``spare``
        # (the guarded writes of injected code write that entry back unchanged).
        self.scratch_ptep, self.scratch_level = self._leaf_ptr(arch.page_to_virt(spare))
        self.scratch = arch.entry_pa(self.scratch_ptep) >> 12
        if self.cfg.workload == "split":
            self._prepare_split(m)
        self.task_a = Task(900, "explore-a", None, arch.copy_thread(arch.current()))
        self.task_b = Task(901, "explore-b", None, arch.copy_thread(arch.current()))
        arch.switch_to(0, self.task_a)
        return m

    def _leaf_ptr(self, va: int) -> tuple[int, int]:
        """The kernel leaf entry pointer mapping ``va``, and its level."""
        arch = self.m.arch
        ptr = arch.pgd_offset_k(va)
        level = 0
        v = arch.read_entry(ptr)
        while arch.pxd_table(v, level):
            level += 1
            ptr = arch.next_offset(ptr, va, level)
            v = arch.read_entry(ptr)
        return ptr, level

    def _prepare_split(self, m: Machine) -> None:
        """Drain the PBA cache to its reserve (the pages taken are held aside, keyed, as
        tables in use elsewhere: the audit is told); take three 2M blocks to split."""
        k = m.k
        pba = m.kpkeys
        assert isinstance(pba, PkeysBlockAllocator)
        while len(pba.cache) > PBA_NR_RESERVED_PAGES:
            pfn = pba.pba_pgtable_alloc(GFP_KERNEL)
            pfn = _need(pfn)
            self.held.append(pfn)
        self.blocks = []
        for _ in range(3):
            pfn = k.page_alloc.alloc_pages(GFP_KERNEL, 9)
            if pfn is None or self._leaf_ptr(m.arch.page_to_virt(pfn))[1] != 2:
                raise InputError("explore: no 2M-block-mapped free range to split")
            self.blocks.append(pfn)

    def _split_one(self, pfn: int, back: bool = True) -> None:
        """set_memory_ro of the block's first page (a split), then (``back``) rw."""
        arch = self.m.arch
        va = arch.page_to_virt(pfn)
        if arch.set_memory_ro(va, 1) or (back and arch.set_memory_rw(va, 1)):
            raise KpsimError("set_memory_ro/rw failed (-ENOMEM)")

    # -- the hook ------------------------------------------------------------------
    def _hook(self, point: str) -> None:
        run = self._run
        if run is None:
            return
        if point == "split:locked":
            self._check_reserve(run)
        if run.depth:
            return
        i = run.counter
        run.counter = i + 1
        if run.trace is not None:
            run.trace.append(point)
        kinds = run.at.get(i)
        if kinds:
            run.depth += 1
            try:
                for kind in kinds:
                    self._inject(run, kind)
            finally:
                run.depth -= 1

    def _check_reserve(self, run: _Run) -> None:
        """A split under the lock must find the reserve it may need: a PMD and a PTE table
        per edge (PBA_NR_RESERVED_PAGES), or 2 for the refill's own split (v6 15/30)."""
        pba = self.m.kpkeys
        if not isinstance(pba, PkeysBlockAllocator) or not pba.enabled:
            return
        need = 2 if pba.alloc_mutex_held else PBA_NR_RESERVED_PAGES
        if len(pba.cache) < need:
            run.stray.append(
                Violation(
                    "split-reserve-short",
                    f"a split on cpu{self.m.arch.cpu_id} started with {len(pba.cache)} reserve "
                    f"pages (it may need {need}: the reserve can run dry)",
                )
            )

    # -- injections ----------------------------------------------------------------
    def _stray(self, run: _Run, where: str) -> None:
        """An unguarded store to live page-table pages from the current context must
        fault (the same value is written back: harmless if it lands)."""
        arch = self.m.arch
        cpu = arch.cpu
        targets = [(self.scratch, self.scratch_ptep)]
        targets += [(pfn, arch.page_to_virt(pfn)) for pfn in self._live]
        for pfn, va in targets:
            if cpu.try_store(va, arch.read_entry(va)) is None:
                run.stray.append(
                    Violation(
                        "unguarded-write-landed",
                        f"{where}: a store to table pfn {pfn:#x} on cpu{arch.cpu_id} landed "
                        f"({arch.PKEY_REG} {arch.pkey_reg(arch.cpu_id):#x})",
                    )
                )

    def _guarded_write(self) -> None:
        arch = self.m.arch
        v = arch.read_entry(self.scratch_ptep)
        if self.scratch_level == 3:
            arch.set_pte(self.scratch_ptep, v)
        else:
            arch.set_pmd(self.scratch_ptep, v)

    def _inject(self, run: _Run, kind: str) -> None:
        arch, k = self.m.arch, self.m.k
        cpu_id = arch.cpu_id
        other = (cpu_id + 1) % len(self.m.hw.cpus)

        def alloc() -> None:
            self._stray(run, kind)
            pfn = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
            if pfn is not None:
                run.extra_tables.append(pfn)

        if kind == "irq-free":

            def free() -> None:
                self._stray(run, kind)
                victim = self._victims.pop() if self._victims else None
                if victim is not None:
                    k.pgtable.free_table(victim)
                    self._freed.append(victim)

            arch.interrupt(cpu_id, free)
        elif kind == "irq-alloc":
            arch.interrupt(cpu_id, alloc)
        elif kind == "sync-alloc":
            arch.synchronous_exception(cpu_id, alloc)
        elif kind == "switch":
            prev = arch.percpu[cpu_id].current
            nxt = self.task_b if prev is not self.task_b else self.task_a
            arch.switch_to(cpu_id, nxt)
            try:
                self._stray(run, f"{kind} (task {nxt.comm})")
                self._guarded_write()
            finally:
                arch.switch_to(cpu_id, prev)
        elif kind == "cpu-guarded":
            with arch.on_cpu(other):
                self._stray(run, f"{kind} (cpu{other})")
                self._guarded_write()
                self._stray(run, f"{kind} (cpu{other}, after)")
        elif kind == "cpu-split":
            with arch.on_cpu(other):
                run.splits += 1
                self._split_one(self.blocks[1 + run.splits % 2], back=False)
                self._stray(run, f"{kind} (cpu{other})")
        elif kind == "cpu-refill":
            with arch.on_cpu(other):
                pba = self.m.kpkeys
                if isinstance(pba, PkeysBlockAllocator) and pba.enabled:
                    pba.refill_pages(alloc_one=False)
                self._stray(run, f"{kind} (cpu{other})")
        elif kind == "cpu-keying":
            with arch.on_cpu(other):
                va = arch.page_to_virt(self.spare)
                arch.set_memory_pkey(va, 1, 1)
                arch.set_memory_pkey(va, 1, 0)
                self._stray(run, f"{kind} (cpu{other})")
        else:  # pragma: no cover - names are validated by the schedule parser
            raise InputError(f"unknown injection {kind!r}")

    # -- the workload ----------------------------------------------------------------
    def _workload(self, attach: bool = True) -> None:
        if self.cfg.workload == "split":
            self._workload_split(attach)
        elif self.cfg.workload == "user":
            self._workload_user(attach)
        else:
            self._workload_guarded(attach)

    def _workload_user(self, attach: bool) -> None:
        """user (see :data:`WORKLOADS`)."""
        from kpsim.workloads.registry import run_workload

        arch = self.m.arch
        if attach:
            arch.explore_hook = self._hook
        try:
            run_workload(self.m, "micromm.fork", {"size": "2M", "h": 0}, seed=self.cfg.seed)
            self._hook("step:munmap")
            run_workload(self.m, "micromm.munmap", {"size": "2M", "h": 0}, seed=self.cfg.seed)
        finally:
            arch.explore_hook = None

    def _workload_split(self, attach: bool) -> None:
        """split (see :data:`WORKLOADS`), on cpu0 in task A."""
        arch, k = self.m.arch, self.m.k
        if attach:
            arch.explore_hook = self._hook
        try:
            self._hook("step:foreign-split")
            self._split_one(self.blocks[0])
            self._hook("step:alloc")
            tables = []
            for _ in range(2):
                t = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
                t = _need(t)
                tables.append(t)
                self._live.append(t)
            self._hook("step:free")
            self._live = []
            for t in tables:
                k.pgtable.free_table(t)
                self._freed.append(t)
        finally:
            arch.explore_hook = None

    def _workload_guarded(self, attach: bool = True) -> None:
        """guarded-paths (see :data:`WORKLOADS`), on cpu0 in task A; ``attach=False``
        runs it with no explorer attached (the arch fast paths: a baseline)."""
        m = self.m
        arch, k = m.arch, m.k
        # The page about to become a table is first used as data on cpu1 (its TLB now
        # holds the pkey-0 translation that the keying's TLB flush must remove).
        pfn = k.page_alloc.alloc_pages(GFP_KERNEL, 0)
        pfn = _need(pfn)
        with arch.on_cpu(1):
            arch.cpu.store(arch.page_to_virt(pfn), 0x5A)
        k.page_alloc.free_pages(pfn, 0)
        self._live = []
        if attach:
            arch.explore_hook = self._hook
        try:
            t = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
            t = _need(t)
            self._live = [t]
            self._hook("step:lazy-section")
            base = arch.page_to_virt(t)
            arch.arch_enter_lazy_mmu_mode()
            try:
                for i in range(3):
                    arch.set_pte(base + 8 * i, arch.read_entry(base + 8 * i) | (1 << 58))
            finally:
                arch.arch_leave_lazy_mmu_mode()
            self._hook("step:single-write")
            arch.set_pte(base + 8 * 3, 1 << 58)
            self._hook("step:nested-guard")
            with kpkeys_guard(arch, KPKEYS_CTX_PGTABLES):
                arch.set_pte(base + 8 * 4, 1 << 58)
            self._hook("step:free")
            self._live = []
            k.pgtable.free_table(t)
            self._freed.append(t)
        finally:
            arch.explore_hook = None

    # -- one schedule --------------------------------------------------------------
    def run(self, schedule: Schedule, *, full_audit: bool = True, trace: bool = False) -> Outcome:
        if self.cfg.workload == "split" and (self.runs or schedule):
            self._boot()  # a fresh machine per schedule: the same points every time
        self.runs += 1
        m = self.m
        k = m.k
        run = _Run(m, schedule, trace)
        self._run = run
        self._live = []
        self._freed = []
        need = sum(1 for _, kind in schedule if kind == "irq-free")
        self._victims = []
        for _ in range(need):
            victim = k.pgtable.alloc_table(GFP_PGTABLE_KERNEL, 3, "kernel")
            if victim is not None:
                self._victims.append(victim)
        dry0 = m.counters["pba.split_reserve_empty"]
        out = Outcome(schedule)
        try:
            self._workload()
        except AccessFault as err:
            out.violations.append(Violation("legitimate-write-faulted", str(err.fault)))
        except OutOfMemory as err:
            if m.k.fault_inject is None:  # only an injected failure may end a step here
                out.violations.append(Violation("model-error", f"OutOfMemory: {err}"))
            else:
                m.k.counters["explore_enomem"] += 1  # the path failed cleanly: audited below
        except (KpsimError, AssertionError) as err:
            out.violations.append(Violation("model-error", f"{type(err).__name__}: {err}"))
        finally:
            self._run = None
            m.arch.explore_hook = None
        self.trace = run.trace
        out.violations.extend(run.stray)
        if not out.violations:
            out.violations.extend(self._after(run, dry0, full_audit))
        if out.violations and self.cfg.workload != "split":
            self._boot()  # the machine is left mid-section: start afresh
        return out

    def _after(self, run: _Run, dry0: int, full_audit: bool) -> list[Violation]:
        m = self.m
        arch, k = m.arch, m.k
        out: list[Violation] = []
        init = arch.pkey_reg_init()
        for cpu_id in range(len(m.hw.cpus)):
            reg = arch.pkey_reg(cpu_id)
            if reg != init:
                out.append(
                    Violation(
                        AT_REST_CHECK[arch.name],
                        f"cpu{cpu_id} {arch.PKEY_REG} {reg:#x} (expected {init:#x})",
                    )
                )
        for pfn in run.extra_tables:
            if linear_pkey(m, pfn) != 1:
                out.append(Violation("audit", f"table pfn {pfn:#x} allocated unkeyed"))
        cached = protected_cache_pfns(m)  # the PBA keeps freed tables keyed, cached
        for pfn in self._freed:
            if pfn in k.pgtable.live or pfn in cached:
                continue
            if linear_pkey(m, pfn) not in (0, None):
                out.append(Violation("audit", f"freed table pfn {pfn:#x} still keyed"))
        if m.counters["pba.split_reserve_empty"] != dry0:
            out.append(Violation("split-reserve-dry", "a split found the reserve empty"))
        for pfn in run.extra_tables:  # clean up in task context
            k.pgtable.free_table(pfn)
        for pfn in self._victims:
            k.pgtable.free_table(pfn)
        self._victims = []
        if not out and full_audit:
            boot = set(self.boot_findings or ())
            found = [f"{v.invariant}: {v.detail}" for v in audit(m, cached=self.held)]
            out.extend(Violation("audit", f) for f in found if f not in boot)
        return out

    def points(self) -> list[str]:
        """The points the workload reaches, in order (a run with no injection)."""
        self.run((), full_audit=False, trace=True)
        return list(self.trace or [])


# --------------------------------------------------------------------------- search


@dataclass(slots=True)
class Summary:
    cfg: ExploreConfig
    points: list[str]
    explored: int = 0
    by_level: dict[int, int] = field(default_factory=dict)
    exhaustive_levels: list[int] = field(default_factory=list)
    violating: int = 0
    first: Outcome | None = None
    seconds: float = 0.0
    boots: int = 0
    #: the machine the workload ran on (``cfg.machine`` as the workload needs it)
    machine: MachineConfig | None = None
    #: audit findings of the machine as booted, before any schedule (not violations)
    boot_findings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.explored / self.seconds if self.seconds > 0 else 0.0


def possible(point: str, kind: str) -> bool:
    """Whether ``kind`` can happen at ``point``: a context switch is a call to
    ``schedule()`` from task context, never between an MSR and its ISB (preemption
    comes through an exception, whose entry synchronises: the IRQ injections). x86's
    ``pkrs_write:after`` has no such window (no barrier follows the WRMSR): a switch
    there is the same as at arm64's ``isb:after``."""
    return not (kind == "switch" and point == "por_write:after")


def _schedules(
    points: Sequence[str], kinds: Sequence[str], budget: int, rng: random.Random
) -> Iterator[tuple[int, bool, Schedule]]:
    """(level, exhaustive, schedule): level by level, exhaustive while a level fits."""
    singles = [(i, k) for i, p in enumerate(points) for k in kinds if possible(p, k)]
    yield 0, True, ()
    left = budget - 1
    level = 1
    while left > 0:
        size = math.comb(len(singles) + level - 1, level)  # multisets of ``level`` singles
        if size <= left:
            for combo in itertools.combinations_with_replacement(singles, level):
                yield level, True, combo
            left -= size
        else:
            seen: set[Schedule] = set()
            while left > 0 and len(seen) < size:
                s = tuple(sorted(rng.choice(singles) for _ in range(level)))
                if s in seen:
                    continue
                seen.add(s)
                left -= 1
                yield level, False, s
        level += 1
        if level > 4:
            break


def explore(
    cfg: ExploreConfig,
    budget: int,
    *,
    kinds: Sequence[str] | None = None,
    audit_every: int = 64,
    stop_at_first: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Explore up to ``budget`` schedules of ``cfg``'s workload."""
    kinds = list(kinds or WORKLOAD_INJECTIONS[cfg.workload])
    ex = Explorer(cfg)
    pts = ex.points()
    summary = Summary(cfg, pts)
    rng = random.Random(cfg.seed)
    t0 = time.perf_counter()
    exhaustive: dict[int, bool] = {}
    for n, (level, exh, sched) in enumerate(_schedules(pts, kinds, budget, rng)):
        out = ex.run(sched, full_audit=(n % audit_every == 0))
        summary.explored += 1
        summary.by_level[level] = summary.by_level.get(level, 0) + 1
        exhaustive[level] = exhaustive.get(level, True) and exh
        if out.violations:
            summary.violating += 1
            if summary.first is None:
                summary.first = out
                if stop_at_first:
                    break
        if progress is not None and n % 97 == 0:
            progress(summary.explored, budget)
    final = ex.run((), full_audit=True)  # the audit after the last schedule
    if final.violations and summary.first is None:
        summary.first = final
        summary.violating += 1
    summary.seconds = time.perf_counter() - t0
    summary.exhaustive_levels = [lv for lv, e in sorted(exhaustive.items()) if e]
    summary.boots = ex.boots
    summary.machine = ex.machine_config
    summary.boot_findings = list(ex.boot_findings or ())
    if progress is not None:
        progress(budget, budget)
    return summary


# --------------------------------------------------------------------------- files

SCHEDULE_HEADER = "# kpsim explore schedule"
_BOOL_FIELDS = ("batching", "poe", "hardened_pgtables")


def schedule_text(cfg: ExploreConfig, schedule: Schedule, points: Sequence[str]) -> str:
    """The schedule as a replayable file (``kpsim explore --replay FILE``)."""
    mc = cfg.machine
    lines = [
        SCHEDULE_HEADER,
        f"arch {mc.arch}",
        f"series {mc.series}",
        f"workload {cfg.workload}",
        f"memory {format_size(mc.memory)}",
        f"cpus {mc.cpus}",
        f"seed {mc.seed}",
    ]
    lines += [f"{k} {'on' if getattr(mc, k) else 'off'}" for k in _BOOL_FIELDS]
    lines += [f"disable {s}" for s in sorted(cfg.disabled)]
    for i, kind in schedule:
        where = points[i] if i < len(points) else "?"
        lines.append(f"inject {i} {kind}  # at {where}")
    return "\n".join(lines) + "\n"


def parse_schedule(text: str, file: str) -> tuple[ExploreConfig, Schedule]:
    """A schedule file; a malformed one is an ``InputError`` at its line."""
    from kpsim.errors import ConfigError
    from kpsim.mm.kpkeys_series import SERIES
    from kpsim.units import parse_size

    machine: dict[str, Any] = {"memory": DEFAULT_MEMORY}
    workload = "guarded-paths"
    disabled: dict[str, int] = {}  # step -> its line
    sched: list[tuple[int, str]] = []
    where: dict[str, int] = {}  # the line of each machine directive, for MachineConfig's errors
    lines = text.splitlines()
    if not lines or lines[0].strip() != SCHEDULE_HEADER:
        raise InputError(
            f"not a schedule file (the first line must be {SCHEDULE_HEADER!r})", file=file, line=1
        )
    for n, raw in enumerate(lines[1:], start=2):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()

        def bad(problem: str, n: int = n) -> InputError:
            return InputError(problem, file=file, line=n)

        where[word] = n

        if word == "arch":
            if rest not in ARCHES:
                raise bad(f"arch: unknown {rest!r} (use {', '.join(ARCHES)})")
            machine["arch"] = rest
        elif word == "series":
            if rest not in SERIES:
                raise bad(f"series: unknown {rest!r} (use {', '.join(SERIES)})")
            machine["series"] = rest
        elif word == "workload":
            if rest not in WORKLOADS:
                raise bad(f"workload: unknown {rest!r} (use {', '.join(WORKLOADS)})")
            workload = rest
        elif word == "memory":
            try:
                machine["memory"] = parse_size(rest, what="memory")
            except InputError as err:
                raise bad(err.problem) from None
        elif word in ("cpus", "seed"):
            if not rest.isdigit():
                raise bad(f"{word}: must be a non-negative integer, got {rest!r}")
            machine[word] = int(rest)
        elif word in _BOOL_FIELDS:
            if rest not in ("on", "off"):
                raise bad(f"{word}: must be on or off, got {rest!r}")
            machine[word] = rest == "on"
        elif word == "disable":
            if rest not in STEPS:
                raise bad(f"disable: unknown step {rest!r} (steps: {', '.join(STEPS)})")
            disabled[rest] = n
        elif word == "inject":
            parts = rest.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise bad("inject: expected 'inject POINT INJECTION' (POINT a number)")
            if parts[1] not in INJECTIONS:
                raise bad(f"inject: unknown injection {parts[1]!r} (use {', '.join(INJECTIONS)})")
            sched.append((int(parts[0]), parts[1]))
        else:
            raise bad(
                f"unknown directive {word!r} (arch, series, workload, memory, cpus, seed, "
                "batching, poe, hardened_pgtables, disable, inject)"
            )
    arch = machine.get("arch", "arm64")
    for step, n in disabled.items():
        try:
            check_steps(arch, {step})
        except InputError as err:
            raise InputError(f"disable: {err.problem}", file=file, line=n) from None
    try:
        mc = MachineConfig(**machine)
    except ConfigError as err:  # at the directive it names ("memory must be ..."), else the end
        at = next((n for w, n in where.items() if err.problem.startswith(w)), len(lines))
        raise InputError(err.problem, file=file, line=at) from None
    return ExploreConfig(mc, workload, frozenset(disabled)), tuple(sorted(sched))


def _need(pfn: int | None) -> int:
    """An allocation the explored path needs: None is -ENOMEM (fault injection)."""
    if pfn is None:
        raise OutOfMemory("an allocation of the explored path failed")
    return pfn
