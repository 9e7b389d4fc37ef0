"""``kpsim sweep``: the summary, exports, resuming, and malformed grids reported as one
line naming file, line and problem (exit 2)."""

from __future__ import annotations

import json

import duckdb
import pytest

from kpsim.cli.main import main

GRID = """\
audit = "none"

[base.machine]
memory = "256M"
cpus = 1

[grid]
workload = ["micromm.munmap:size=2M,h=0", "micromm.fork:size=2M,h=0"]
"kernel.batching" = [true, false]
"""


def test_sweep_summary_exports_and_resume(tmp_path, capsys):
    """4 runs stored and exported (Parquet and CSV hold the same rows); a second sweep
    skips all 4 and exits 0."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    pq, csv = tmp_path / "r.parquet", tmp_path / "r.csv"
    argv = ["sweep", str(grid), "--jobs", "2", "--parquet", str(pq), "--csv", str(csv), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["database"] == str(tmp_path / "g.duckdb")
    assert (doc["runs"], doc["skipped"], doc["ran"], doc["failed"]) == (4, 0, 4, 0)
    rows = {e["format"]: e["rows"] for e in doc["exports"]}
    assert rows["parquet"] == rows["csv"] > 0
    con = duckdb.connect()
    cols = [d[0] for d in con.execute(f"SELECT * FROM '{pq}' LIMIT 1").description]
    assert {"grid_workload", "grid_kernel_batching", "batching", "counter", "value"} <= set(cols)
    (n,) = con.execute(f"SELECT count(DISTINCT run_id) FROM '{csv}'").fetchone()
    assert n == 4
    (off,) = con.execute(f"SELECT count(*) FROM '{pq}' WHERE NOT batching AND "
                         "grid_kernel_batching = 'false'").fetchone()  # fmt: skip
    assert off > 0
    assert main(["sweep", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 4 already in" in out and "0 run now" in out


def test_interrupted_sweep_is_exit_130_and_keeps_finished_runs(tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first stored run: exit 130, one line, the run is in the database."""
    from kpsim.engine import sweep as sweep_mod

    real = sweep_mod.sweep

    def interrupted(grid, results, **kw):
        def on_result(done, total, run_id):
            raise KeyboardInterrupt

        return real(grid, results, jobs=1, on_result=on_result)

    monkeypatch.setattr(sweep_mod, "sweep", interrupted)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(grid)])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 finished runs are in" in err
    (n,) = (
        duckdb.connect(str(tmp_path / "g.duckdb")).execute("SELECT count(*) FROM runs").fetchone()
    )
    assert n == 1


WL = '[[base.workload]]\nname = "micromm.fork"\n'

MALFORMED = [
    # (grid text, line, text the message must contain)
    ('colour = 1\n' + WL, 1, "unknown top-level key 'colour'"),
    ('[grid]\n"machine.memroy" = ["1G"]\n' + WL, 2, "unknown parameter 'machine.memroy'"),
    ('[grid]\nseed = 3\n' + WL, 2, "seed: must be a non-empty array"),
    ('[grid]\n"machine.memory" = [\n  "256M",\n  "100M",\n]\n' + WL, 4,
     'machine.memory = "100M": [machine] memory: must be a multiple of 2M'),
    ('[grid]\n"machine.cpus" = [1, 0]\n' + WL, 2, "machine.cpus = 0: [machine] cpus"),
    ('[grid]\n"kernel.allocator" = ["pba", "minmal"]\n' + WL, 2, '"minmal"'),
    ('[grid]\n"kernel.linear_map" = ["block"]\n"kernel.allocator" = ["minimal"]\n' + WL, 3,
     "kernel.allocator = \"minimal\": the minimal allocator needs a PTE-mapped"),
    ('[grid]\nworkload = ["micromm.fork:h=2"]\n', 2, "h: must be one of 0, 1"),
    ('[grid]\nworkload = ["micromm.frk"]\n', 2, "unknown workload 'micromm.frk'"),
    ('[grid]\nworkload = ["micromm.fork:size"]\n', 2, "expected KEY=VALUE"),
    ('[grid]\nworkload = ["micromm.fork"]\n"workload.pages" = [4]\n', 3,
     "workload.pages: no workload of this run has a parameter 'pages'"),
    ('[grid]\n"machine.cpus" = [1]\n', 1, "no workloads"),
    ('audit = "most"\n' + WL, 1, "audit: must be one of full | end | none"),
    ('[grid\n', 1, "TOML syntax"),
    ('[base.machine]\nmemory = "1Q"\n' + WL, 2, "[base]: [machine] memory"),
    ('scenario = "missing.toml"\n', 1, "scenario: cannot read"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "needle"), MALFORMED)
def test_malformed_grid_is_one_line_exit_2(tmp_path, capsys, text, line, needle):
    """Each malformed grid: exit 2, one stderr line 'kpsim sweep: FILE:LINE: problem',
    nothing run, no database left behind."""
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    assert main(["sweep", str(grid)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"kpsim sweep: {grid}:{line}: "), captured.err
    assert needle in captured.err, captured.err
    assert not (tmp_path / "bad.duckdb").exists()


def test_unreachable_dask_scheduler_is_exit_2(tmp_path, capsys):
    """--dask naming no scheduler: one line naming the address, exit 2."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    assert main(["sweep", str(grid), "--dask", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kpsim sweep: tcp://127.0.0.1:9: ") and err.count("\n") == 1, err


ARCH_GRID = """\
audit = "end"

[base.machine]
memory = "256M"
cpus = 1

[grid]
"machine.arch" = ["arm64", "x86"]
workload = ["micromm.fork:size=2M,h=0"]
"""


def _workload_rows(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT r.arch, r.linear_map, r.allocator, r.status, w.overhead_pct, w.overhead_lo, "
            "w.overhead_hi, w.overhead_level, w.overhead_basis FROM workloads w "
            "JOIN runs r USING (run_id) ORDER BY r.arch"
        ).fetchall()
    finally:
        con.close()


def test_sweep_over_both_architectures_stores_each_with_its_interval(tmp_path, capsys):
    """A grid over ``machine.arch``: each run's architecture is a column of ``runs``
    (arm64's too, whose document leaves it out), with the architecture's own direct-map
    default; arm64's overhead carries the calibration's held-out interval (level 0.95),
    x86's the priors' sensitivity range (no level). Both audits are clean (status 0)."""
    grid = tmp_path / "g.toml"
    grid.write_text(ARCH_GRID)
    assert main(["sweep", str(grid), "--jobs", "1"]) == 0
    capsys.readouterr()
    (arm, x86) = _workload_rows(tmp_path / "g.duckdb")
    assert arm[:4] == ("arm64", "pte", "minimal", 0) and x86[:4] == ("x86", "block", "pba", 0)
    for pct, lo, hi in (arm[4:7], x86[4:7]):
        assert pct > 0 and lo <= pct <= hi
    assert arm[7] == 0.95 and "held-out" in arm[8]
    assert x86[7] is None and "prior-only" in x86[8]


def test_sweep_arch_option_sets_every_run_and_keeps_arm64_run_ids(tmp_path, capsys):
    """``--arch x86`` runs the grid on x86; ``--arch arm64`` is the grid as written (the
    same run ids, so a database made without the option is not run again)."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace('"kernel.batching" = [true, false]\n', ""))
    db = tmp_path / "g.duckdb"
    assert main(["sweep", str(grid), "--jobs", "1"]) == 0
    assert main(["sweep", str(grid), "--arch", "arm64"]) == 0
    assert "2 runs, 2 already in" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--arch", "x86", "--jobs", "1"]) == 0
    assert "2 runs, 0 already in" in capsys.readouterr().out
    arches = sorted(r[0] for r in _workload_rows(db))
    assert arches == ["arm64", "arm64", "x86", "x86"]


def test_sweep_arch_option_with_an_arch_axis_is_one_line_exit_2(tmp_path, capsys):
    """``--arch`` and a grid that chooses ``machine.arch`` contradict each other: one
    line naming the grid's line, exit 2, nothing run."""
    grid = tmp_path / "g.toml"
    grid.write_text(ARCH_GRID)
    assert main(["sweep", str(grid), "--arch", "x86"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"kpsim sweep: {grid}:8: --arch x86: the grid chooses")
    assert not (tmp_path / "g.duckdb").exists()


def test_sweep_refuses_a_database_of_other_columns(tmp_path, capsys):
    """A database whose tables another kpsim version made (here: no ``arch``, no interval
    columns) is refused with one line naming it, and left as it was."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, memory_bytes BIGINT)")
    con.close()
    assert main(["sweep", str(grid), "-o", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kpsim sweep: {db}: its runs table was made by another kpsim")
    assert err.count("\n") == 1 and "arch" in err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    con.close()
