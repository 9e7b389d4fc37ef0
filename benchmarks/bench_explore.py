"""``kpsim explore`` throughput: schedules per second on the default workload.

Baseline measured in the same run: the same workload's operations (a table allocated and
keyed, writes in a batched lazy-MMU section, a guarded write, a nested guard, the free)
run bare, without the explorer attached (the arch fast paths), on the same machine. The
ratio is what one explored schedule costs against one plain run of the workload
(the point hooks, the injections, the checks, the sampled full audit). Prints, never
asserts.
"""

from __future__ import annotations

import time

from kpsim.engine.explore import ExploreConfig, Explorer, explore
from kpsim.machine.config import MachineConfig

SCHEDULES = 20000


def _bare_rate(seconds: float = 2.0) -> float:
    ex = Explorer(ExploreConfig(MachineConfig(memory="256M")))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ex._freed = []
        ex._workload(attach=False)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> dict[str, float]:
    bare = _bare_rate()
    s = explore(ExploreConfig(MachineConfig(memory="256M")), SCHEDULES)
    print(f"explore, default workload ({len(s.points)} points), {s.explored} schedules:")
    print(
        f"  explored        {s.rate:9.0f} schedules/s ({s.seconds:.1f} s, violations {s.violating})"
    )
    print(f"  bare workload   {bare:9.0f} runs/s (no explorer attached)")
    print(f"  ratio           {bare / s.rate:9.2f} x the bare workload per schedule")
    return {"schedules_per_s": round(s.rate, 1), "bare_runs_per_s": round(bare, 1)}


if __name__ == "__main__":
    main()
