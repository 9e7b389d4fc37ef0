"""Tasks as far as page tables care: ``task_struct`` with its mm and arch thread state.

Models the parts of ``include/linux/sched.h`` that kpsim needs: a pid, a comm, the
mm the task runs on (None for kernel threads), per-task thread flags
(``TIF_LAZY_MMU`` and ``TIF_LAZY_MMU_PENDING``), the generic lazy-MMU nesting count
(``task->lazy_mmu_state``), and an opaque ``thread`` slot that the architecture fills
with its ``thread_struct`` (on arm64: the saved POR_EL1 values).
"""

from __future__ import annotations

from typing import Any


class Task:
    __slots__ = ("comm", "lazy_mmu_nesting", "mm", "pid", "thread", "tif_lazy_mmu", "tif_pending")

    def __init__(self, pid: int, comm: str, mm: Any = None, thread: Any = None) -> None:
        self.pid = pid
        self.comm = comm
        self.mm = mm
        self.thread = thread
        self.lazy_mmu_nesting = 0
        self.tif_lazy_mmu = False
        self.tif_pending = False

    def __repr__(self) -> str:
        return f"Task({self.pid}, {self.comm!r})"
