"""``kpsim sweep`` benchmark: runs per minute on the local process pool and on a local
Dask cluster, the same grid, and whether the two databases hold the same rows.

The grid is 100 runs of tiny machines (5 memory sizes from 256 MiB, 1 and 2 CPUs, both
linear-map policies, 5 seeds; one micromm.munmap of 2 MiB each, audit off): the
per-run overhead of the sweep machinery (worker start, scenario parse, boot, storing
every counter in DuckDB) is what dominates, which is what this measures. Local: a
spawn pool of 2 workers (this machine has 2 cores). Dask: ``distributed.LocalCluster``
with 2 worker processes of 1 thread, its start-up timed apart. The baseline is the same
100 runs executed one after the other in this process with no database (the engine
alone), so the ratios say what the pool and the cluster add or win.

Prints, never asserts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

GRID = """\
audit = "none"

[[base.workload]]
name = "micromm.munmap"
size = "2M"
h = 0

[grid]
"machine.memory" = ["256M", "258M", "260M", "262M", "264M"]
"machine.cpus" = [1, 2]
"kernel.linear_map" = ["pte", "block"]
seed = [0, 1, 2, 3, 4]
"""


def _contents(db: Path) -> dict[str, list[tuple[object, ...]]]:
    from kpsim.engine.results import Results

    with Results(db, read_only=True) as r:
        return {t: sorted(r.db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("runs", "workloads", "counters")}  # fmt: skip


def main() -> dict[str, float]:
    from distributed import LocalCluster

    from kpsim.engine.grid import load_grid
    from kpsim.engine.job import execute
    from kpsim.engine.results import Results
    from kpsim.engine.sweep import sweep
    from kpsim.machine.scenario import parse_scenario

    tmp = Path(tempfile.mkdtemp(prefix="kpsim-bench-sweep-"))
    (tmp / "g.toml").write_text(GRID)
    grid = load_grid(tmp / "g.toml")
    n = len(grid.runs)

    t0 = time.perf_counter()
    for r in grid.runs:
        execute(parse_scenario(r.scenario, r.name), audit=grid.audit, details=True)
    serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    with Results(tmp / "local.duckdb") as res:
        sweep(grid, res, jobs=2)
    local = time.perf_counter() - t0

    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:  # fmt: skip
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        with Results(tmp / "dask.duckdb") as res:
            sweep(grid, res, dask=cluster.scheduler_address)
        dask = time.perf_counter() - t1
    same = _contents(tmp / "local.duckdb") == _contents(tmp / "dask.duckdb")

    per_min = {k: 60.0 * n / v for k, v in (("serial", serial), ("local", local), ("dask", dask))}
    print(f"kpsim sweep: {n} runs (tiny machines, one 2 MiB micromm.munmap each)")
    print(
        f"  engine alone, in process, no database  {serial:6.2f} s  "
        f"{per_min['serial']:7.0f} runs/min"
    )
    print(
        f"  local pool, 2 workers, DuckDB          {local:6.2f} s  {per_min['local']:7.0f} runs/min"
        f"  ({per_min['local'] / per_min['serial']:.2f}x the engine alone)"
    )
    print(
        f"  Dask LocalCluster, 2 workers, DuckDB   {dask:6.2f} s  {per_min['dask']:7.0f} runs/min"
        f"  ({per_min['dask'] / per_min['local']:.2f}x local; cluster start {startup:.1f} s apart)"
    )
    print(f"  local and Dask databases identical: {'yes' if same else 'NO'}")
    return {"runs_per_min_local": per_min["local"], "runs_per_min_dask": per_min["dask"],
            "dask_over_local": per_min["dask"] / per_min["local"]}  # fmt: skip


if __name__ == "__main__":
    main()
