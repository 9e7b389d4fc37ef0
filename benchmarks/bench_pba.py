"""kpkeys table allocators compared on one workload (issue 6), and PBA alloc+free speed.

Policies, each on a fresh 1 GiB machine running the same seeded churn
(:func:`kpsim.workloads.pba_churn.churn`: processes forking, faulting and exiting,
vmalloc churn, a foreign linear-map change every 8 rounds) and then memory pressure:

- ``minimal/pte``: the seed's allocator on a PTE-mapped linear map (the baseline);
- ``pba/block``: v6's pkeys block allocator;
- ``grouped/block``: the x86 grouped-pages cache (no reserve; needs allow_unsafe_split);
- ``reserve/block``: grouped pages plus a boot reserve sized to split the whole map.

Figures per policy: share of linear-map bytes in leaves >= 2 MiB after the churn;
steady-state (second half of the churn) 2 MiB blocks split per 512 table pages
allocated; ``set_memory_pkey`` calls per 1000 table allocations (steady state and
whole run); audit violations after churn and after pressure; table pages cached.
Then allocations + frees per second through ``pagetable_alloc``/``pagetable_free``,
PBA on a block map against the seed allocator on a pte map, measured in the same run
(the ratio is the figure; absolute rates are noisy on a shared host).
"""

from __future__ import annotations

import time

from kpsim.audit.invariants import audit
from kpsim.machine import boot
from kpsim.mm.gfp import GFP_PGTABLE_KERNEL
from kpsim.report.linear_map import block_bytes_fraction, linear_map_mappings
from kpsim.workloads.pba_churn import churn, memory_pressure

POLICIES = (("minimal", "pte"), ("pba", "block"), ("grouped", "block"), ("reserve", "block"))
ROUNDS = 1500
POOL = 200


def run_policy(allocator: str, linear_map: str, rounds: int = ROUNDS) -> dict[str, float]:
    m = boot(memory="1G", linear_map=linear_map, allocator=allocator, allow_unsafe_split=True)
    marks: dict[str, dict[str, int]] = {}

    def on_round(r: int) -> None:
        if r == rounds // 2:
            marks["mid"] = dict(m.counters)
            m.timeline.sample("mid")
        if r == rounds - 1:  # before the final teardown
            marks["end"] = dict(m.counters)
            marks["held"] = {"held": _held(m)}

    start = dict(m.counters)
    t = time.perf_counter()
    stats = churn(m, rounds, seed=1, pool=POOL, on_round=on_round)
    elapsed = time.perf_counter() - t
    final = dict(m.counters)
    mid, end = marks["mid"], marks["end"]

    def delta(a: dict[str, int], b: dict[str, int], key: str) -> int:
        return b.get(key, 0) - a.get(key, 0)

    allocs = delta(mid, end, "pgtable_alloc")
    blocks_split = delta(mid, end, "split_pmd")
    smp_steady = delta(mid, end, "set_memory_pkey")
    smp_all = delta(start, final, "set_memory_pkey")
    mappings = linear_map_mappings(m.mem, m.arch.swapper_pg_dir)
    violations = len(audit(m))
    memory_pressure(m, order=0)
    kp = m.kpkeys
    return {
        "processes": stats["processes"],
        "seconds": elapsed,
        "table_allocs": delta(start, final, "pgtable_alloc"),
        "held_pages": marks["held"]["held"],
        "block_pct": 100.0 * block_bytes_fraction(mappings),
        "splits_per_512": blocks_split / (allocs / 512) if allocs else 0.0,
        "smp_per_1000_steady": 1000.0 * smp_steady / allocs if allocs else 0.0,
        "smp_per_1000_all": 1000.0 * smp_all / max(1, delta(start, final, "pgtable_alloc")),
        "violations": violations,
        "violations_after_pressure": len(audit(m)),
        "cached_after_pressure": getattr(kp, "nr_cached", 0),
        "block_pct_after_pressure": 100.0
        * block_bytes_fraction(linear_map_mappings(m.mem, m.arch.swapper_pg_dir)),
        "warnings": m.counters["warnings"],
    }


def _held(m: object) -> int:
    """Free keyed pages the allocator holds (cache plus any split reserve)."""
    kp = getattr(m, "kpkeys", None)
    return len(getattr(kp, "cache", ())) + len(getattr(kp, "split_reserve", ()))


def alloc_free_rate(allocator: str, linear_map: str, n: int = 20000, batch: int = 200) -> float:
    """``pagetable_alloc`` + ``pagetable_free`` pairs per second, in batches."""
    m = boot(memory="1G", linear_map=linear_map, allocator=allocator)
    pg = m.k.pgtable
    t = time.perf_counter()
    for _ in range(n // batch):
        pfns = [pg.pagetable_alloc(GFP_PGTABLE_KERNEL) for _ in range(batch)]
        for pfn in pfns:
            assert pfn is not None
            pg.pagetable_free(pfn)
    return n / (time.perf_counter() - t)


def main() -> None:
    print(f"workload: 1G machine, {ROUNDS} churn rounds (pool {POOL}), then memory pressure")
    hdr = (
        f"{'policy':<14} {'tables':>7} {'held':>5} {'>=2M %':>7} {'split/512':>9} "
        f"{'smp/1k st':>9} {'smp/1k all':>10} {'audit':>5} {'audit*':>6} "
        f"{'>=2M %*':>7} {'cached*':>7} {'warn':>5} {'sec':>5}"
    )
    print(hdr)
    for allocator, lm in POLICIES:
        r = run_policy(allocator, lm)
        print(
            f"{allocator + '/' + lm:<14} {r['table_allocs']:>7.0f} {r['held_pages']:>5.0f} "
            f"{r['block_pct']:>7.2f} "
            f"{r['splits_per_512']:>9.3f} {r['smp_per_1000_steady']:>9.2f} "
            f"{r['smp_per_1000_all']:>10.2f} {r['violations']:>5.0f} "
            f"{r['violations_after_pressure']:>6.0f} {r['block_pct_after_pressure']:>7.2f} "
            f"{r['cached_after_pressure']:>7.0f} {r['warnings']:>5.0f} {r['seconds']:>5.1f}"
        )
    print(
        "(held = free keyed pages the allocator holds at the end of the churn; "
        "* = after memory pressure; smp = set_memory_pkey calls; st = steady state)"
    )
    seed = alloc_free_rate("minimal", "pte")
    rates = {"pba/block": alloc_free_rate("pba", "block")}
    rates["pba-noblock/pte"] = alloc_free_rate("pba", "pte")
    print(f"alloc+free pairs/s: seed minimal/pte {seed:,.0f} (baseline, same run)")
    for name, rate in rates.items():
        print(f"  {name:<16} {rate:>10,.0f}  ({rate / seed:.2f}x the seed)")


if __name__ == "__main__":
    main()
