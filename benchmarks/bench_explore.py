"""``kpsim explore`` throughput: schedules per second on the default workload, on arm64
(POE) and on x86 (PKS: the workload on a 4K direct map, as ``kpsim explore --arch x86``
runs it).

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


def _config(arch: str) -> MachineConfig:
    return MachineConfig(memory="256M", **({"arch": arch} if arch != "arm64" else {}))


def _bare_rate(arch: str = "arm64", seconds: float = 2.0) -> float:
    ex = Explorer(ExploreConfig(_config(arch)))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ex._freed = []
        ex._workload(attach=False)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> dict[str, float]:
    out: dict[str, float] = {}
    for arch in ("arm64", "x86"):
        bare = _bare_rate(arch)
        s = explore(ExploreConfig(_config(arch)), SCHEDULES)
        print(f"explore on {arch}, default workload ({len(s.points)} points), "
              f"{s.explored} schedules:")  # fmt: skip
        print(f"  explored        {s.rate:9.0f} schedules/s ({s.seconds:.1f} s, "
              f"violations {s.violating})")  # fmt: skip
        print(f"  bare workload   {bare:9.0f} runs/s (no explorer attached)")
        print(f"  ratio           {bare / s.rate:9.2f} x the bare workload per schedule")
        suffix = "" if arch == "arm64" else f" ({arch})"
        out[f"schedules_per_s{suffix}"] = round(s.rate, 1)
        out[f"bare_runs_per_s{suffix}"] = round(bare, 1)
    return out


if __name__ == "__main__":
    main()
