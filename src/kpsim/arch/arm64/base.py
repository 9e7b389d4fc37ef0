"""State shared by the arm64 arch modules (the Python form of arm64's globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.memory import Layout
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.arm64.system import Arm64System
from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_series import Series
from kpsim.mm.sched import Task


class PerCpu:
    """Per-CPU arch data: the running task, interrupt depth, saved exception frames."""

    __slots__ = ("current", "irq_depth", "saved_por")

    def __init__(self, idle: Task) -> None:
        self.current = idle
        self.irq_depth = 0
        self.saved_por: list[int] = []


@mypyc_attr(native_class=False)  # see Arm64Base
class Arm64Base:
    """Attributes every arm64 mixin may use.

    The compiled core (``kpsim._core``) compiles the arm64 arch modules, but ``Arm64``
    and its mixins stay ordinary (non-native) Python classes there: mypyc's native
    classes allow single inheritance only (the mixins would have to be traits), and
    a native instance takes no attributes its class does not declare, while callers
    set hooks and monkeypatch methods on the arch object. The method bodies are
    compiled; attribute access and method calls keep Python's semantics."""

    k: Kernel
    system: Arm64System
    layout: Layout
    cpu_id: int
    percpu: list[PerCpu]
    swapper_pg_dir: int  # physical address of the kernel PGD
    linear_map_policy: str  # "pte" or "block"
    hardened_pgtables: bool  # static key kpkeys_hardened_pgtables_key
    batching: bool
    series: Series
    skip_unchanged: bool  # series.api == "enter-leave" (kpkeys_enter_context skips)
    guard_tif: bool  # the batching guard tests TIF_LAZY_MMU (v4-v8)
    guard_irq: bool  # ... and switches anyway in interrupt context (v5-v8)
    eret_always: bool  # exception return writes pt_regs::por_el1 whatever it is
    por_init: int
    split_lock_depth: int
    rodata_ro: bool
    irq_hook: Callable[[], None] | None
    #: ``kpsim explore``'s point hook (None: no explorer attached, the fast paths run)
    explore_hook: Callable[[str], None] | None
    #: protective steps switched off for study (``kpsim explore --disable``)
    disabled: frozenset[str]
    kpkeys_split_hooks: Any  # PBA prepare/ready protocol, or None

    @property
    def cpu(self) -> Cpu:
        return self.system.cpus[self.cpu_id]

    def current(self) -> Task:
        return self.percpu[self.cpu_id].current

    # provided by Arm64 (declared here for the mixins)
    def arch_kpkeys_set_context(self, ctx: int) -> int:
        raise NotImplementedError

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        raise NotImplementedError

    # provided by LazyMmuMixin (declared here for the other mixins)
    def arch_enter_lazy_mmu_mode(self) -> None:
        raise NotImplementedError

    def arch_leave_lazy_mmu_mode(self) -> None:
        raise NotImplementedError

    def system_supports_poe(self) -> bool:
        return all(c.poe for c in self.system.cpus)

    def in_interrupt(self) -> bool:
        return self.percpu[self.cpu_id].irq_depth > 0
