"""arm64 POE against x86 PKS on the series' benchmarks: counted events and estimated
overhead side by side (issue 18, item 5; ``kpsim compare``).

Models no kernel code. Each benchmark row of a published table (kpsim's workload and
parameters for it: the micromm fork/munmap and vmalloc rows by default) is run on four
fresh machines: arm64 and x86, each with the feature off and on, each architecture as
its defaults build it (arm64: a PTE-mapped linear map and the series' allocator; x86:
the 1 GiB/2 MiB direct map, on which the series' choice is the PBA), the same series,
CPUs, seed and lazy-MMU batching. What comes back, per row and architecture:

- the counted events, grouped so that the two architectures' names for the same work
  line up (:data:`GROUPS`: POR_EL1 writes and WRMSRs to IA32_PKRS are both "pkey
  register writes"; TLBI instructions and INVLPG/INVPCID both "TLB invalidations";
  arm64 has no IPI for a remote flush, x86 has no broadcast invalidation), with the
  counters behind each group, off, on and the difference;
- the estimated overhead (feature on against off, :mod:`kpsim.report.cost`): arm64 with
  the shipped calibration (fitted on the arm64 v5-corrected table) and its held-out
  interval, and arm64 and x86 with the priors alone, so the two prior figures differ
  only by what the architectures count and by the x86 hardware priors. **Nothing on
  x86 is fitted** (no x86 kpkeys measurement exists): the x86 interval is the range of
  the overhead when the x86 hardware priors (``costs-x86.toml``) and, independently,
  the unfitted software priors are each divided and multiplied by 3 (four corners);
  it is a sensitivity range, not a confidence interval. The arm64 prior figure gets
  the same range, for comparison.

The published figures are not used: they measured arm64 only (``kpsim reproduce``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from kpsim.events import Counters
from kpsim.report.calibration import calibration, overhead_interval
from kpsim.report.cost import CostTable, default_costs, overhead
from kpsim.report.published import PublishedRow, load_table, select_rows

ARCHES: Final = ("arm64", "x86")
DEFAULT_ROWS: Final = "fork,munmap,vmalloc,vm_map_ram"
#: (group, the counters of either architecture that make it up)
GROUPS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("pkey register writes", ("por_write", "pkrs_write")),
    ("ISBs after them", ("isb",)),
    ("guard entries", ("kpkeys_guard_entries",)),
    ("table allocs", ("pgtable_alloc",)),
    ("table frees", ("pgtable_free",)),
    ("set_memory_pkey calls", ("set_memory_pkey",)),
    ("PBA allocs", ("pba.alloc",)),
    ("direct/linear map splits", ("split_pud", "split_pmd", "split_cont")),
    ("TLB invalidations", ("tlbi_va", "tlbi_asid", "tlbi_all", "invlpg", "invpcid")),
    ("TLBI syncs (DSB)", ("tlbi_sync",)),
    ("TLB shootdowns (IPI rounds)", ("tlb_shootdown",)),
    ("shootdown IPIs received", ("tlb_shootdown_ipi",)),
)
PRIOR_FACTOR: Final = 3.0
Runner = Callable[[str, PublishedRow, bool], Counters]


def _scaled(costs: CostTable, names: Iterable[str], factor: float) -> CostTable:
    return costs.replace({n: costs[n] * factor for n in names}, status="override")


#: arm64's hardware priors (costs.toml): the POR_EL1 write, barriers, TLB maintenance
ARM64_HARDWARE: Final = ("por_write", "isb", "dsb", "tlbi_sync", "tlbi_va", "tlbi_asid", "tlbi_all")


def prior_groups(arch: str) -> tuple[list[str], list[str]]:
    """(hardware, software): the unfitted non-zero priors of ``arch``'s table, split into
    the architecture's hardware events (arm64's in costs.toml, x86's in costs-x86.toml)
    and the kernel's software costs, which both architectures share."""
    costs, base = default_costs(arch), default_costs()
    unknown = [n for n, e in costs.entries.items() if e.status == "unknown" and e.cycles > 0]
    if arch == "arm64":
        hardware = [n for n in unknown if n in ARM64_HARDWARE]
    else:
        hardware = [n for n in unknown if costs.entries[n] != base.entries.get(n)]
    return hardware, [n for n in unknown if n not in hardware and n not in ARM64_HARDWARE]


def prior_range(on: Mapping[str, float], off: Mapping[str, float], arch: str) -> dict[str, Any]:
    """The overhead with the priors of ``arch``, and the range its four corners give:
    the hardware priors and, independently, the software priors ÷3 and ×3."""
    costs = default_costs(arch)
    groups = prior_groups(arch)
    centre = overhead(on, off, costs)
    corners = [centre]
    for factors in itertools.product((1 / PRIOR_FACTOR, PRIOR_FACTOR), repeat=len(groups)):
        table = costs
        for names, f in zip(groups, factors, strict=True):
            table = _scaled(table, names, f)
        corners.append(overhead(on, off, table))
    hw = "costs-x86.toml" if arch == "x86" else "costs.toml"
    return {
        "percent": round(centre, 4),
        "lo": round(min(corners), 4),
        "hi": round(max(corners), 4),
        "basis": f"prior-only: the {arch} hardware priors ({hw}) and, independently, the "
        f"software priors each ÷{PRIOR_FACTOR:g} and ×{PRIOR_FACTOR:g}; a sensitivity "
        "range, not a confidence interval",
    }


def event_groups(on: Mapping[str, float], off: Mapping[str, float]) -> list[dict[str, Any]]:
    """Each :data:`GROUPS` entry that either run counted: off, on, the difference and
    the counters behind it."""
    out = []
    for name, counters in GROUPS:
        seen = [c for c in counters if on.get(c) or off.get(c)]
        if not seen:
            continue
        a = math.fsum(float(off.get(c, 0)) for c in seen)
        b = math.fsum(float(on.get(c, 0)) for c in seen)
        out.append(
            {"group": name, "counters": seen, "off": int(a), "on": int(b), "added": int(b - a)}
        )
    return out


def _arch_doc(arch: str, on: Counters, off: Counters, batching: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "events": event_groups(on, off),
        "prior": prior_range(on, off, arch),
        "fitted": None,
    }
    if arch == "arm64":
        cal = calibration()
        iv = overhead_interval(overhead(on, off, cal.costs), batching, cal.label)
        doc["fitted"] = iv.as_json() | {"costs": cal.label}
    return doc


def machine_config(arch: str, memory: int = 512 << 20, **options: Any) -> Any:
    """The machine one side runs on: ``arch`` with its own defaults (linear map, the
    series' allocator for it) unless ``options`` say otherwise."""
    from kpsim.machine.config import MachineConfig

    return MachineConfig(arch=arch, memory=memory, **options)


def machine_runner(
    *,
    cpus: int = 2,
    seed: int = 0,
    batching: bool = True,
    allocator: str | None = None,
    scale: Mapping[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Runner:
    """Runs one row's workload on a fresh machine of ``arch``, feature on or off
    (``allocator``: the same kpkeys table allocator on both; None: each one's default)."""
    from kpsim.machine.boot import Machine
    from kpsim.workloads.registry import WORKLOADS, run_workload

    scale = dict(scale or {})

    def run(arch: str, row: PublishedRow, hardened: bool) -> Counters:
        names = {p.name for p in WORKLOADS[row.workload].params}
        params = {k: v for k, v in row.params.items() if k in names}
        params.update({k: v for k, v in scale.items() if k in names})
        if progress is not None:
            progress(f"{row.key} on {arch}, feature {'on' if hardened else 'off'}")
        size = int(params.get("size", 0))
        memory = max(512 << 20, (2 * size + (512 << 20) + (1 << 21) - 1) & ~((1 << 21) - 1))
        cfg = machine_config(
            arch,
            memory,
            cpus=cpus,
            hardened_pgtables=hardened,
            batching=batching,
            seed=seed,
            allocator=allocator,
        )
        return run_workload(Machine.boot(cfg), row.workload, params, seed=seed)

    return run


def compare(
    rows: str = DEFAULT_ROWS,
    *,
    table: str = "v5-corrected",
    batching: bool = True,
    allocator: str | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """The side-by-side document of ``kpsim compare`` (see the module docstring)."""
    tab = load_table(table)
    keys = select_rows(tab, rows)
    configs = {}
    for arch in ARCHES:
        cfg = machine_config(arch, allocator=allocator, batching=batching)
        configs[arch] = {
            "linear_map": cfg.linear_map,
            "allocator": cfg.effective_allocator,
            "series": cfg.series,
        }
    run = runner or machine_runner(batching=batching, allocator=allocator)
    done: dict[tuple[str, str, tuple[Any, ...], bool], Counters] = {}
    out = []
    for row in tab.rows:
        if row.key not in keys:
            continue
        doc: dict[str, Any] = {"row": row.key, "benchmark": row.benchmark}
        for arch in ARCHES:
            counts = []
            for hardened in (False, True):
                key = (arch, row.workload, tuple(sorted(row.params.items())), hardened)
                if key not in done:
                    done[key] = _events_only(run(arch, row, hardened))
                counts.append(done[key])
            doc[arch] = _arch_doc(arch, counts[1], counts[0], batching)
        out.append(doc)
    return {
        "table": tab.name,
        "batching": batching,
        "machines": configs,
        "note": "x86 figures are prior-only: no x86 kpkeys measurement exists to fit "
        "them; arm64's fitted figure uses the calibration fitted on the arm64 table",
        "rows": out,
    }


def _events_only(counts: Counters) -> Counters:
    """Levels such as ``PageTables`` (a delta, not an event) are not priced."""
    return Counters({k: v for k, v in counts.items() if k != "PageTables"})


__all__ = [
    "ARCHES",
    "DEFAULT_ROWS",
    "GROUPS",
    "compare",
    "event_groups",
    "machine_runner",
    "prior_groups",
    "prior_range",
]
