"""Linear-map composition over time (issue 6, item 6).

A :class:`Timeline` samples, on demand and on every allocator event (refill, shrink,
init), what the linear map is made of and what the kpkeys table allocator holds:

- ``leaves``: linear-map leaf descriptors by size (``1G 32M 2M 64K 4K``) and
  ``block_pct``, the share of mapped bytes in leaves of 2 MiB or larger;
- ``tables``: table pages serving the linear map, by level (``pud pmd pte``);
- ``cached`` (free keyed pages in the allocator), ``reserve`` (reserve pages present);
- ``splits`` by level (``pud``: 1 GiB -> 2 MiB, ``pmd``: 2 MiB -> 4 KiB, ``cont``:
  contiguous-hint groups broken), ``set_memory_pkey`` calls and ``pgtable_alloc``s so
  far (the time axis: table allocations).

The walk is injected (``leaves_fn``/``tables_fn``, the arch's linear-map counters) so
that this module stays architecture-neutral. At most ``max_samples`` are kept: when
full, every other sample is dropped (the series keeps its span at half resolution).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpsim.mm.kernel import Kernel

LeavesFn = Callable[[], dict[str, int]]
TablesFn = Callable[[], dict[str, int]]
BIG = {"1G": 1 << 30, "32M": 32 << 20, "2M": 2 << 20}
ALL = {**BIG, "64K": 64 << 10, "4K": 4 << 10}


class Timeline:
    def __init__(
        self,
        k: Kernel,
        leaves_fn: LeavesFn,
        tables_fn: TablesFn,
        allocator: Any = None,
        *,
        max_samples: int = 2048,
    ) -> None:
        self.k = k
        self.leaves_fn = leaves_fn
        self.tables_fn = tables_fn
        self.allocator = allocator
        self.max_samples = max_samples
        self.samples: list[dict[str, Any]] = []

    def sample(self, event: str = "sample") -> dict[str, Any]:
        """Record one sample now (also the allocator's ``sample_hook``)."""
        c = self.k.counters
        leaves = self.leaves_fn()
        total = sum(ALL[key] * n for key, n in leaves.items())
        big = sum(BIG[key] * leaves.get(key, 0) for key in BIG)
        a = self.allocator
        s: dict[str, Any] = {
            "event": event,
            "pgtable_alloc": c["pgtable_alloc"],
            "leaves": leaves,
            "block_pct": round(100.0 * big / total, 3) if total else 0.0,
            "tables": self.tables_fn(),
            "cached": a.nr_cached if a is not None and hasattr(a, "nr_cached") else 0,
            "reserve": a.reserve_level() if a is not None and hasattr(a, "reserve_level") else 0,
            "splits": {"pud": c["split_pud"], "pmd": c["split_pmd"], "cont": c["split_cont"]},
            "set_memory_pkey": c["set_memory_pkey"],
        }
        self.samples.append(s)
        if len(self.samples) > self.max_samples:
            self.samples = self.samples[::2]
        return s
