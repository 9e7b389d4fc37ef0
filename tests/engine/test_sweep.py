"""kpsim sweep's engine: a grid's runs, the same database contents locally and on a Dask
cluster, and a sweep killed halfway that, started again, runs only the missing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kpsim.engine.grid import load_grid, parse_grid
from kpsim.engine.results import Results
from kpsim.engine.sweep import sweep

#: 100 runs of tiny machines: 5 memory sizes x 2 CPU counts x 2 linear maps x 5 seeds.
GRID100 = """\
audit = "none"

[base.machine]
poe = true

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


def contents(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted: what 'the same database contents' compares."""
    with Results(db, read_only=True) as r:
        out = {}
        for table in ("runs", "workloads", "counters"):
            rows = r.db.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out


@pytest.fixture(scope="module")
def grid100(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "g100.toml"
    path.write_text(GRID100)
    return load_grid(path)


@pytest.fixture(scope="module")
def local_db(grid100, tmp_path_factory):
    """The 100-run grid on the local process pool (2 workers)."""
    db = tmp_path_factory.mktemp("local") / "local.duckdb"
    with Results(db) as r:
        summary = sweep(grid100, r, jobs=2)
    assert summary.as_json() == {"runs": 100, "skipped": 0, "ran": 100, "failed": 0, "found": 0}
    return db


def test_grid_is_the_product_of_its_values(grid100):
    """5 x 2 x 2 x 5 = 100 distinct runs, each a scenario with its values applied."""
    assert len(grid100.runs) == 100 and len({r.run_id for r in grid100.runs}) == 100
    first = grid100.runs[0]
    assert first.params == {"machine.memory": "256M", "machine.cpus": 1,
                            "kernel.linear_map": "pte", "seed": 0}  # fmt: skip
    assert 'memory = "256M"' in first.scenario and 'linear_map = "pte"' in first.scenario


def test_local_database_has_one_row_per_run_and_counter(local_db):
    """runs: 100 rows with the config as columns; counters: every counter of every run."""
    with Results(local_db, read_only=True) as r:
        rows = r.table("SELECT linear_map, cpus, count(*) AS n FROM runs GROUP BY ALL ORDER BY ALL")
        assert [(x["linear_map"], x["cpus"], x["n"]) for x in rows] == [
            ("block", 1, 25), ("block", 2, 25), ("pte", 1, 25), ("pte", 2, 25)]  # fmt: skip
        docs = r.documents()
        assert len(docs) == 100 and all(d["status"] == 0 for d in docs)
        n = sum(len(w[v]["counters"]) for d in docs for w in d["workloads"] for v in ("on", "off"))
        (count,) = r.db.execute("SELECT count(*) FROM results").fetchone()
        assert count == n
        # the feature-on runs switch POR_EL1, the feature-off ones never do
        pw = r.table("SELECT variant, count(*) AS n, min(value) AS lo, max(value) AS hi "
                     "FROM counters WHERE counter = 'por_write' GROUP BY variant")  # fmt: skip
        by = {x["variant"]: x for x in pw}
        assert by["on"]["n"] == 100 and by["on"]["lo"] > 0
        assert "off" not in by or by["off"]["hi"] == 0


def test_dask_local_cluster_gives_identical_contents(grid100, local_db, tmp_path):
    """The same grid on a Dask LocalCluster of 2 workers: the same rows in every table."""
    distributed = pytest.importorskip("distributed", reason="kpsim[dask] not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:  # fmt: skip
        db = tmp_path / "dask.duckdb"
        with Results(db) as r:
            summary = sweep(grid100, r, dask=cluster.scheduler_address)
        assert summary.ran == 100
    assert contents(db) == contents(local_db)


KILLER = """\
import os, signal, sys
from kpsim.engine.grid import load_grid
from kpsim.engine.results import Results
from kpsim.engine.sweep import sweep

def on_result(done, total, run_id):
    if done == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: as `kill -9` would

if __name__ == "__main__":  # the pool's spawned workers import this file too
    sweep(load_grid(sys.argv[1]), Results(sys.argv[2]), jobs=2, on_result=on_result)
"""


def test_killed_sweep_restarts_with_only_the_missing_runs(tmp_path, local_db):
    """SIGKILL after 37 stored runs: the database keeps those 37; the restart runs the
    other 63 and the contents equal an uninterrupted sweep's."""
    grid_path = tmp_path / "g100.toml"
    grid_path.write_text(GRID100)
    db = tmp_path / "killed.duckdb"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), str(grid_path), str(db), "37"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Results(db) as r:
        assert len(r.done()) == 37
        summary = sweep(load_grid(grid_path), r, jobs=2)
    assert (summary.skipped, summary.ran) == (37, 63)
    assert contents(db) == contents(local_db)


def test_refused_run_is_stored_with_its_error_and_not_retried(tmp_path):
    """A workload too large for its machine: status 2 with the message; a rerun skips it."""
    path = tmp_path / "g.toml"
    path.write_text(
        textwrap.dedent("""\
        audit = "none"
        [base.machine]
        memory = "256M"
        [grid]
        workload = ["micromm.munmap:size=2M", "micromm.munmap:size=1G"]
        """)
    )
    grid = load_grid(path)
    with Results(tmp_path / "r.duckdb") as r:
        s = sweep(grid, r, jobs=1)
        assert (s.ran, s.failed) == (2, 1)
        (row,) = r.table("SELECT status, error FROM runs WHERE status = 2")
        assert "ran out of memory" in row["error"]
        assert sweep(grid, r, jobs=1).ran == 0


def test_workload_params_apply_to_the_workloads_that_have_them():
    """workload.size sets size on the run's workloads that take it; others keep theirs."""
    g = parse_grid(
        textwrap.dedent("""\
        [grid]
        workload = [["micromm.fork:h=0", "vmalloc.fix_size_alloc:pages=4"]]
        "workload.size" = ["2M", "4M"]
        """),
        "g.toml",
    )
    assert len(g.runs) == 2
    import tomllib

    ws = tomllib.loads(g.runs[1].scenario)["workload"]
    assert ws == [{"name": "micromm.fork", "h": 0, "size": "4M"},
                  {"name": "vmalloc.fix_size_alloc", "pages": 4}]  # fmt: skip


def test_duplicate_runs_are_run_once():
    """Two [[point]]s that make the same scenario are one run (identity is content)."""
    g = parse_grid('[[point]]\nseed = 1\n[[point]]\nseed = 1\n[[point]]\nseed = 2\n'
                   '[[base.workload]]\nname = "micromm.fork"\n', "g.toml")  # fmt: skip
    assert len(g.runs) == 2


def test_grid_order_and_path_do_not_change_run_ids(tmp_path):
    """The same runs listed in another order, from another file: the same ids."""
    a = parse_grid('[grid]\nseed = [0, 1]\n"machine.cpus" = [1, 2]\n'
                   '[[base.workload]]\nname = "micromm.fork"\n', "a.toml")  # fmt: skip
    text = (
        '[grid]\n"machine.cpus" = [2, 1]\nseed = [1, 0]\n[[base.workload]]\nname = "micromm.fork"\n'
    )
    b = parse_grid(text, str(tmp_path / "b.toml"))
    assert {r.run_id for r in a.runs} == {r.run_id for r in b.runs}
    assert json.dumps(sorted(r.run_id for r in a.runs))
    assert os.path.basename(b.path) == "b.toml"


def test_series_kernel_option_is_a_grid_parameter(tmp_path):
    """kernel.series (a scenario field the grid module never names) sweeps like any other:
    the runs table's series column holds each run's value."""
    path = tmp_path / "g.toml"
    path.write_text(
        textwrap.dedent("""\
        audit = "none"
        [base.machine]
        memory = "256M"
        [[base.workload]]
        name = "micromm.fork"
        size = "2M"
        [grid]
        "kernel.series" = ["v7", "v8"]
        """)
    )
    with Results(tmp_path / "r.duckdb") as r:
        assert sweep(load_grid(path), r, jobs=1).ran == 2
        rows = r.table("SELECT series, status FROM runs ORDER BY series")
    assert rows == [{"series": "v7", "status": 0}, {"series": "v8", "status": 0}]


EXAMPLE_GRIDS = Path(__file__).resolve().parents[2] / "examples" / "grids"


@pytest.mark.parametrize("path", sorted(EXAMPLE_GRIDS.glob("*.toml")), ids=lambda p: p.name)
def test_example_grids_validate(path):
    """Every shipped grid parses and each of its runs is a scenario kpsim run accepts."""
    grid = load_grid(path)
    assert grid.runs and len({r.run_id for r in grid.runs}) == len(grid.runs)
