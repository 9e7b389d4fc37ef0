"""State and hooks every arch object shares (``current``, ``in_interrupt()``, the
per-arch hook declarations), and the series switches both arches read the same way.

Models the arch-independent parts: ``current``/``smp_processor_id`` (a per-CPU run
pointer), ``in_interrupt()`` (``include/linux/preempt.h``: the IRQ nesting count),
``num_online_cpus()``, and ``kpkeys_hardened_pgtables``' static key and series options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from kpsim.mm.kernel import Kernel
from kpsim.mm.kpkeys_series import DEFAULT_SERIES, SERIES, Series
from kpsim.mm.sched import Task


class PerCpuState(Protocol):
    """What the generic code reads of an arch's per-CPU data."""

    current: Task
    irq_depth: int


@mypyc_attr(native_class=False)  # mixins: see Arm64Base for why these stay non-native
class ArchBase:
    """Attributes every arch mixin may use; the arch's own base narrows ``system``,
    ``layout`` and ``percpu`` to its types."""

    k: Kernel
    system: Any  # the arch's System: cpus, mem, counters
    cpu_id: int
    percpu: Sequence[PerCpuState]  # the arch's PerCpu
    swapper_pg_dir: int  # physical address of the kernel PGD
    linear_map_policy: str  # "pte" or "block"
    hardened_pgtables: bool  # static key kpkeys_hardened_pgtables_key
    batching: bool
    series: Series
    skip_unchanged: bool  # series.api == "enter-leave" (kpkeys_enter_context skips)
    guard_tif: bool  # the batching guard tests TIF_LAZY_MMU (v4-v8)
    guard_irq: bool  # ... and switches anyway in interrupt context (v5-v8)
    split_lock_depth: int
    rodata_ro: bool
    irq_hook: Callable[[], None] | None
    #: ``kpsim explore``'s point hook (None: no explorer attached, the fast paths run)
    explore_hook: Callable[[str], None] | None
    #: protective steps switched off for study (``kpsim explore --disable``)
    disabled: frozenset[str]
    kpkeys_split_hooks: Any  # PBA prepare/ready protocol, or None
    static_tables: list[int]
    vmemmap_range: tuple[int, int, int]

    #: the direct/linear map's mapping policy when the machine does not say
    DEFAULT_LINEAR_MAP = "pte"

    def __init__(
        self,
        k: Kernel,
        system: Any,
        *,
        linear_map: str | None = None,
        hardened_pgtables_config: bool = True,
        batching: bool = True,
        series: str = DEFAULT_SERIES,
    ) -> None:
        """The fields every arch object starts with; :meth:`arch_init` adds the arch's."""
        self.k = k
        self.system = system
        self.cpu_id = 0
        self.percpu = [
            self.new_percpu(Task(0, f"swapper/{i}", None, self.new_thread()))
            for i in range(len(system.cpus))
        ]
        self.swapper_pg_dir = 0
        self.linear_map_policy = linear_map or self.DEFAULT_LINEAR_MAP
        self.hardened_pgtables = False  # the static key: flipped by kpkeys init
        self.batching = batching
        self.disabled = frozenset()
        self.explore_hook = None
        self.split_lock_depth = 0
        self.rodata_ro = False
        self.irq_hook = None
        self.kpkeys_split_hooks = None
        self.static_tables = []
        self.vmemmap_range = (0, 0, 0)
        self.arch_init(hardened_pgtables_config)
        self.set_series(SERIES[series])
        k.arch = self

    def new_percpu(self, idle: Task) -> Any:
        """The arch's per-CPU data for a CPU whose idle task is ``idle``."""
        raise NotImplementedError

    def new_thread(self) -> Any:
        """A fresh arch ``thread_struct``."""
        raise NotImplementedError

    def arch_init(self, hardened_pgtables_config: bool) -> None:
        """The arch's own fields (its layout, the pkey register's initial value...)."""
        raise NotImplementedError

    def set_series(self, series: Series) -> None:
        """Follow ``series``' kpkeys API and batching guard (with ``kpsim explore``'s
        ``in-interrupt-check`` switched off: v4's rule, ``TIF_LAZY_MMU`` alone)."""
        self.series = series
        self.skip_unchanged = series.skip_unchanged
        self.guard_tif = series.lazy_guard != "por"
        self.guard_irq = series.lazy_guard == "tif-irq"
        if "in-interrupt-check" in self.disabled:  # v4's rule: TIF_LAZY_MMU alone
            self.guard_tif, self.guard_irq = True, False

    def set_disabled(self, steps: frozenset[str]) -> None:
        """Switch protective steps off for study (``kpsim explore --disable``)."""
        self.disabled = frozenset(steps)
        self.set_series(self.series)

    def explored_pkey_change(
        self, change: Callable[..., int], addr: int, numpages: int, set_mask: int, clear_mask: int
    ) -> int:
        """``set_memory_pkey``'s attribute change (``change``: arm64's
        ``change_memory_common``, x86's ``change_page_attr_set_clr``) with an explorer
        attached or a step switched off: its two points around the change, and the
        final TLB flush left out under ``--disable tlbi-after-set-memory-pkey``."""
        hook = self.explore_hook
        flush = "tlbi-after-set-memory-pkey" not in self.disabled
        if hook is not None:
            hook("set_memory_pkey:before")
        ret = change(addr, numpages, set_mask, clear_mask, flush=flush)
        if hook is not None:
            hook("set_memory_pkey:after")
        return ret

    def current(self) -> Task:
        return self.percpu[self.cpu_id].current

    def in_interrupt(self) -> bool:
        return self.percpu[self.cpu_id].irq_depth > 0

    def num_online_cpus(self) -> int:
        return len(self.system.cpus)

    #: the pkey register's name, as the audit and the reports print it
    PKEY_REG = "pkey register"

    def pkey_reg(self, cpu_id: int) -> int:
        """The pkey register of CPU ``cpu_id`` now (POR_EL1, IA32_PKRS)."""
        raise NotImplementedError

    def pkey_reg_init(self) -> int:
        """The register's default-context value (``POR_EL1_INIT``, ``PKS_INIT_VALUE``)."""
        raise NotImplementedError

    # provided by the arch (declared here for the generic mixins)
    def system_supports_poe(self) -> bool:
        """``arch_supports_kpkeys()``: every CPU has the pkey hardware enabled."""
        raise NotImplementedError

    def arch_kpkeys_set_context(self, ctx: int) -> int:
        raise NotImplementedError

    def arch_kpkeys_restore_pkey_reg(self, value: int) -> None:
        raise NotImplementedError

    def arch_enter_lazy_mmu_mode(self) -> None:
        raise NotImplementedError

    def arch_leave_lazy_mmu_mode(self) -> None:
        raise NotImplementedError
