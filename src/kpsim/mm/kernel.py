"""Kernel-wide memory-management state: what ``mm/`` reaches through globals in Linux.

One :class:`Kernel` per simulated machine holds memblock, the buddy allocator and its
``struct page`` metadata, the page-table allocator door (:mod:`kpsim.mm.pgtable`), the
event counters, the recorded ``WARN_ON`` events and the arch hooks.
"""

from __future__ import annotations

from typing import Any

from kpsim.events import Counters, WarnEvent
from kpsim.hw.physmem import PhysicalMemory


class Kernel:
    __slots__ = (
        "arch",
        "counters",
        "fault_inject",
        "mem",
        "memblock",
        "options",
        "page_alloc",
        "pgtable",
        "vmap",
        "warnings",
    )

    def __init__(self, mem: PhysicalMemory, options: Any = None) -> None:
        self.mem = mem
        self.options = options
        self.counters = Counters()
        self.warnings: list[WarnEvent] = []
        self.memblock: Any = None
        self.page_alloc: Any = None
        self.pgtable: Any = None
        self.arch: Any = None
        self.vmap: Any = None  # mm/vmalloc.c state, created on first use
        #: the armed fault-injection sites (:mod:`kpsim.mm.fault_inject`), or None
        self.fault_inject: Any = None

    def warn(self, function: str, message: str) -> None:
        """``WARN_ON``: recorded as an event and counted, never raised."""
        self.warnings.append(WarnEvent(function, message))
        self.counters["warnings"] += 1
