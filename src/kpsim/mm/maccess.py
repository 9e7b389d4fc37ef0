"""``copy_to_kernel_nofault`` (``mm/maccess.c``): a kernel store that reports a fault
as ``-EFAULT`` instead of oopsing. The KUnit checks use it to probe protection.

In Linux the store runs under an exception-table fixup: the abort handler sees ESR_EL1
and FAR_EL1, finds the fixup and returns ``-EFAULT``; the caller never sees the
registers. :func:`copy_to_kernel_nofault_fault` also hands back the fault the handler
saw, so that a report can show what blocked the write."""

from __future__ import annotations

from typing import Any

EFAULT = -14


def copy_to_kernel_nofault_fault(
    cpu: Any, va: int, value: int, size: int = 8
) -> tuple[int, Any | None]:
    """Store ``value`` at kernel address ``va`` on ``cpu`` at EL1: ``(0, None)``, or
    ``(-EFAULT, fault)`` with the architectural fault (ESR, FAR) that was fixed up."""
    fault = cpu.try_store(va, value, size)  # a kernel store: EL1 on arm64, CPL 0 on x86
    return (0, None) if fault is None else (EFAULT, fault)


def copy_to_kernel_nofault(cpu: Any, va: int, value: int, size: int = 8) -> int:
    """Store ``value`` at kernel address ``va`` on ``cpu`` at EL1; 0 or -EFAULT."""
    return copy_to_kernel_nofault_fault(cpu, va, value, size)[0]
