"""A sweep's results in an embedded DuckDB database (issue 15, item 2).

Models nothing in Linux. One database file holds every finished run of one or more
sweeps; each run is written in one transaction as soon as it finishes, so an
interrupted sweep loses nothing finished, and a sweep started again skips the runs the
database already holds (:meth:`Results.done`). Nothing time- or host-dependent is
stored: the same runs give the same contents, whichever order they finished in and
wherever they ran.

Tables (``run_id`` is :attr:`kpsim.engine.grid.Run.run_id`):

- ``runs``: one row per run: the machine configuration that ran, one column per field
  of :meth:`MachineConfig.as_dict` (``arch`` included, arm64's too; a field added
  there becomes a column), the run's workloads, the grid values that made it
  (``params``, JSON), status (0 clean, 1 the run found something, 2 the run was
  refused: ``error`` says why), KUnit failures, audit violations, the scenario text
  and the whole result document (``document``);
- ``workloads``: one row per run and workload: label, name, parameters, cycles with the
  feature on and off, overhead (percent) with its interval (``overhead_lo/hi``,
  ``overhead_level``: null for x86's prior sensitivity range; ``overhead_basis``), and
  the linear map after the feature-on run
  (``block_pct``, ``keyed_pages``, ``cached_pages``, ``split_pud/pmd/cont``);
- ``counters``: one row per run, workload, variant (``on``/``off``) and counter.

The view ``results`` is ``counters`` joined with the run's parameters (one row per run
and per counter, the scenario's parameters as columns: the machine configuration's, and
one ``grid_KEY`` column per grid key): what :meth:`Results.export`
writes as Parquet or CSV, in a fixed order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kpsim.errors import InputError
from kpsim.machine.config import MachineConfig

__all__ = ["CONFIG_COLUMNS", "Results"]


def _sql_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    return "VARCHAR"


#: (column, SQL type) of the machine configuration, from ``MachineConfig.as_dict``
#: (of an x86 machine: its ``arch`` is there, as arm64's document leaves it out).
CONFIG_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (k, _sql_type(v)) for k, v in MachineConfig(arch="x86").as_dict().items()
)
#: a configuration field's value when a run's document leaves it out
_CONFIG_DEFAULTS = {"arch": "arm64"}

_RUNS_TAIL = (
    ("workloads", "VARCHAR"),
    ("params", "VARCHAR"),
    ("status", "INTEGER"),
    ("error", "VARCHAR"),
    ("kunit_failed", "INTEGER"),
    ("audit_violations", "INTEGER"),
    ("scenario", "VARCHAR"),
    ("document", "VARCHAR"),
)
_WORKLOAD_COLUMNS = (
    ("run_id", "VARCHAR"),
    ("workload_index", "INTEGER"),
    ("workload", "VARCHAR"),
    ("name", "VARCHAR"),
    ("wl_params", "VARCHAR"),
    ("cycles_on", "DOUBLE"),
    ("cycles_off", "DOUBLE"),
    ("overhead_pct", "DOUBLE"),
    ("overhead_lo", "DOUBLE"),
    ("overhead_hi", "DOUBLE"),
    ("overhead_level", "DOUBLE"),
    ("overhead_basis", "VARCHAR"),
    ("block_pct", "DOUBLE"),
    ("keyed_pages", "BIGINT"),
    ("cached_pages", "BIGINT"),
    ("split_pud", "BIGINT"),
    ("split_pmd", "BIGINT"),
    ("split_cont", "BIGINT"),
)


class Results:
    """The results database at ``path`` (created if missing)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        import duckdb

        self.path = str(path)
        try:
            self.db = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as err:
            raise InputError(f"cannot open the results database: {err}", file=self.path) from None
        if not read_only:
            self._schema()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _schema(self) -> None:
        runs = [("run_id", "VARCHAR PRIMARY KEY"), *CONFIG_COLUMNS, *_RUNS_TAIL]
        self._check_columns("runs", [c for c, _ in runs])
        self._check_columns("workloads", [c for c, _ in _WORKLOAD_COLUMNS])
        self.db.execute(f"CREATE TABLE IF NOT EXISTS runs ({_cols(runs)})")
        wl = _cols(_WORKLOAD_COLUMNS)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS workloads ({wl})")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS counters (run_id VARCHAR, workload_index INTEGER, "
            "workload VARCHAR, variant VARCHAR, counter VARCHAR, value BIGINT)"
        )
        self.grid_columns(())

    def _check_columns(self, table: str, want: list[str]) -> None:
        """Refuse a database whose ``table`` an older kpsim made with other columns
        (its runs would not be comparable; a new file is the answer)."""
        got = [row[0] for row in self.db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall()]  # fmt: skip
        if got and got != want:
            missing = [c for c in want if c not in got] or [c for c in got if c not in want]
            raise InputError(
                f"its {table} table was made by another kpsim version (columns differ: "
                f"{', '.join(missing)}); give a new database file with -o",
                file=self.path,
            )

    def grid_columns(self, keys: tuple[str, ...]) -> None:
        """(Re)make the ``results`` view with one column per grid key (``workload.size``
        as ``grid_workload_size``, the value as written in the grid, as text) beside the
        machine configuration's columns."""
        keep = [f"r.{c}" for c, _ in CONFIG_COLUMNS]
        for key in keys:
            name = "grid_" + "".join(ch if ch.isalnum() else "_" for ch in key)
            path = '$."' + key.replace("'", "''").replace('"', "") + '"'
            keep.append(f"json_extract_string(r.params, '{path}') AS \"{name}\"")
        self.db.execute(
            f"CREATE OR REPLACE VIEW results AS SELECT c.run_id, {', '.join(keep)}, r.params, "
            "c.workload_index, c.workload, c.variant, c.counter, c.value "
            "FROM counters c JOIN runs r USING (run_id)"
        )

    # ----------------------------------------------------------------------- writing

    def done(self) -> set[str]:
        """The run ids already in the database."""
        return {row[0] for row in self.db.execute("SELECT run_id FROM runs").fetchall()}

    def add(
        self, run_id: str, params: Mapping[str, Any], scenario: str, doc: Mapping[str, Any]
    ) -> None:
        """Store one finished run (its result document), in one transaction."""
        self.db.execute("BEGIN TRANSACTION")
        try:
            for w in doc["workloads"]:
                self._add_workload(run_id, w)
            machine = doc["machine"]
            row = [run_id, *(machine.get(c, _CONFIG_DEFAULTS.get(c)) for c, _ in CONFIG_COLUMNS),
                   "; ".join(w["label"] for w in doc["workloads"]), _json(params),
                   doc["status"], None, doc["kunit"].get("failed", 0),
                   len(doc["audit"]["violations"]), scenario, _json(doc)]  # fmt: skip
            self._insert("runs", row)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def add_failed(self, run_id: str, params: Mapping[str, Any], scenario: str, error: str) -> None:
        """Store a run the engine refused (status 2), so that it is not retried."""
        row = [run_id, *(None for _ in CONFIG_COLUMNS), None, _json(params), 2, error,
               None, None, scenario, None]  # fmt: skip
        self._insert("runs", row)

    def _add_workload(self, run_id: str, w: Mapping[str, Any]) -> None:
        i, label = w["index"], w["label"]
        on = w.get("on")
        lm = (on or {}).get("linear_map") or {}
        splits = lm.get("splits", {})
        ov = w.get("overhead")
        self._insert(
            "workloads",
            [run_id, i, label, w["name"], _json(w["params"]),
             on["cycles"] if on else None, w["off"]["cycles"],
             ov["percent"] if ov else None, *_interval(ov), lm.get("block_pct"),
             lm.get("keyed_pages"), lm.get("cached_pages"), splits.get("pud"),
             splits.get("pmd"), splits.get("cont")],
        )  # fmt: skip
        rows = [
            (run_id, i, label, variant, name, int(value))
            for variant in ("on", "off")
            if variant in w
            for name, value in w[variant]["counters"].items()
        ]
        if rows:  # one statement: DuckDB's executemany costs about 1 ms a row
            marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
            flat = [x for row in rows for x in row]
            self.db.execute(f"INSERT INTO counters VALUES {marks}", flat)

    def _insert(self, table: str, row: list[Any]) -> None:
        marks = ", ".join("?" for _ in row)
        self.db.execute(f"INSERT INTO {table} VALUES ({marks})", row)

    # ----------------------------------------------------------------------- reading

    def table(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a query as dicts."""
        cur = self.db.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def documents(self) -> list[dict[str, Any]]:
        """Every finished run's result document, by run id."""
        rows = self.db.execute(
            "SELECT document FROM runs WHERE document IS NOT NULL ORDER BY run_id"
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def export(self, path: str | Path, fmt: str) -> int:
        """Write the ``results`` view to ``path`` as ``parquet`` or ``csv``; the row count."""
        kind = {"parquet": "(FORMAT parquet)", "csv": "(FORMAT csv, HEADER true)"}[fmt]
        target = str(path).replace("'", "''")
        order = "run_id, workload_index, variant, counter"
        self.db.execute(f"COPY (SELECT * FROM results ORDER BY {order}) TO '{target}' {kind}")
        row = self.db.execute("SELECT count(*) FROM results").fetchone()
        return int(row[0]) if row else 0


def _interval(ov: Mapping[str, Any] | None) -> tuple[Any, Any, Any, Any]:
    """An overhead's interval as the ``workloads`` columns: lo, hi, level (None for a
    sensitivity range, as x86's prior-only figures have) and basis."""
    iv = (ov or {}).get("interval")
    if not iv:
        return (None, None, None, None)
    return (iv["lo"], iv["hi"], iv.get("level"), iv.get("basis"))


def _cols(cols: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    return ", ".join(f'"{name}" {kind}' for name, kind in cols)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
