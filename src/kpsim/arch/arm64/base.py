"""State shared by the arm64 arch modules (the Python form of arm64's globals)."""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from kpsim.arch.arm64.memory import Layout
from kpsim.arch.generic.base import ArchBase
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.arm64.system import Arm64System
from kpsim.mm.sched import Task


class PerCpu:
    """Per-CPU arch data: the running task, interrupt depth, saved exception frames."""

    __slots__ = ("current", "irq_depth", "saved_por")

    def __init__(self, idle: Task) -> None:
        self.current = idle
        self.irq_depth = 0
        self.saved_por: list[int] = []


@mypyc_attr(native_class=False)  # see Arm64Base
class Arm64Base(ArchBase):
    """Attributes every arm64 mixin may use (the arch-neutral ones are
    :class:`~kpsim.arch.generic.base.ArchBase`'s).

    The compiled core (``kpsim._core``) compiles the arm64 arch modules, but ``Arm64``
    and its mixins stay ordinary (non-native) Python classes there: mypyc's native
    classes allow single inheritance only (the mixins would have to be traits), and
    a native instance takes no attributes its class does not declare, while callers
    set hooks and monkeypatch methods on the arch object. The method bodies are
    compiled; attribute access and method calls keep Python's semantics."""

    system: Arm64System
    layout: Layout
    percpu: list[PerCpu]
    eret_always: bool  # exception return writes pt_regs::por_el1 whatever it is
    por_init: int

    @property
    def cpu(self) -> Cpu:
        return self.system.cpus[self.cpu_id]

    PKEY_REG = "POR_EL1"

    def system_supports_poe(self) -> bool:
        return all(c.poe for c in self.system.cpus)

    def pkey_reg(self, cpu_id: int) -> int:
        return self.system.cpus[cpu_id].por_el1

    def pkey_reg_init(self) -> int:
        return self.por_init
