"""``copy_to_kernel_nofault`` (``mm/maccess.c``): a kernel store that reports a fault
as ``-EFAULT`` instead of oopsing. The KUnit checks use it to probe protection."""

from __future__ import annotations

from typing import Any

EFAULT = -14


def copy_to_kernel_nofault(cpu: Any, va: int, value: int, size: int = 8) -> int:
    """Store ``value`` at kernel address ``va`` on ``cpu`` at EL1; 0 or -EFAULT."""
    fault = cpu.try_store(va, value, size, 1)
    return 0 if fault is None else EFAULT
