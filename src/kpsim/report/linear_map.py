"""What the linear map is made of: leaf descriptors by size, counted over whole tables,
and how that composition evolved (the kpkeys allocator's time series).

The counting itself lives in :mod:`kpsim.arch.arm64.linear_map_stats` (re-exported
here): ``swapper_pg_dir`` as the MMU sees it for ``[PAGE_OFFSET, PAGE_END)``, 1 GiB,
32 MiB (contPMD), 2 MiB, 64 KiB (contPTE) and 4 KiB leaves. :func:`linear_map_report`
is the ``linear_map`` section of ``kpsim boot --json``: current leaves and tables,
the table allocator's state and counters, and the sampled series
(:class:`kpsim.kpkeys.timeline.Timeline`) when the machine has one.
"""

from __future__ import annotations

from typing import Any

from kpsim.arch.arm64.linear_map_stats import (
    CHUNK,
    KERNEL_HALF,
    SIZE_KEYS,
    SIZES,
    TableSlice,
    Words,
    block_bytes_fraction,
    kernel_tables,
    linear_map_mappings,
    linear_map_tables,
    mapped_bytes,
)

__all__ = [
    "CHUNK",
    "KERNEL_HALF",
    "SIZES",
    "SIZE_KEYS",
    "TableSlice",
    "Words",
    "allocator_report",
    "block_bytes_fraction",
    "kernel_tables",
    "linear_map_mappings",
    "linear_map_report",
    "linear_map_tables",
    "mapped_bytes",
]

ALLOCATOR_COUNTERS = ("set_memory_pkey", "split_pud", "split_pmd", "split_cont", "pgtable_alloc")


def allocator_report(machine: Any) -> dict[str, Any]:
    """The kpkeys table allocator: name, state, its ``pba.*`` and split counters."""
    kp = getattr(machine, "kpkeys", None)
    out: dict[str, Any] = {"name": machine.config.effective_allocator}
    state = getattr(kp, "state", None)
    if callable(state):
        out.update(state())
    c = machine.k.counters
    counters = {k: v for k, v in c.items() if k.startswith("pba.")}
    counters.update({k: c[k] for k in ALLOCATOR_COUNTERS})
    out["counters"] = dict(sorted(counters.items()))
    return out


def linear_map_report(machine: Any) -> dict[str, Any]:
    """The ``linear_map`` section of ``kpsim boot --json``."""
    mem, root = machine.mem, machine.arch.swapper_pg_dir
    timeline = getattr(machine, "timeline", None)
    if timeline is not None:  # the arch's own counters (arm64 linear map, x86 direct map)
        mappings, tables = timeline.leaves_fn(), timeline.tables_fn()
    else:
        mappings, tables = linear_map_mappings(mem, root), linear_map_tables(mem, root)
    return {
        "policy": machine.config.linear_map,
        "mappings": mappings,
        "mapped_bytes": mapped_bytes(mappings),
        "block_pct": round(100.0 * block_bytes_fraction(mappings), 3),
        "tables": tables,
        "allocator": allocator_report(machine),
        "timeline": list(timeline.samples) if timeline is not None else [],
    }
