"""``kpsim sweep``'s engine: run a grid's scenarios in parallel, results into DuckDB.

Models nothing in Linux. :func:`sweep` takes a validated :class:`~kpsim.engine.grid.Grid`
and a :class:`~kpsim.engine.results.Results` database, skips the runs the database
already holds, and runs the others with :func:`kpsim.engine.job.execute` (the same
engine as ``kpsim run``, with ``details`` on), each in a worker:

- locally, on a ``concurrent.futures`` process pool (``jobs`` workers, spawned fresh:
  no state is inherited from the parent);
- on a Dask distributed cluster (``dask=ADDRESS``, a scheduler address such as
  ``tcp://host:8786``; its workers need kpsim installed).

Results come back to this process, which writes each one as it arrives, in its own
transaction: killing the sweep loses at most the runs still in flight. A run the engine
refuses (a workload too large for its machine: ``InputError``) is stored with status 2
and its message, so that it is not retried; any other exception in a worker is a bug
and stops the sweep. Every run is deterministic (its seed is part of its scenario), so
the database's contents do not depend on the order runs finish in, nor on where they ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from kpsim.engine.grid import Grid, Run
from kpsim.engine.results import Results
from kpsim.errors import InputError

__all__ = ["SweepSummary", "run_point", "sweep"]

#: ``on_result(done, total, run_id)``: called after each run is stored (``done`` counts
#: the runs stored by this sweep, ``total`` those it had to run).
ResultFn = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class SweepSummary:
    runs: int  # in the grid
    skipped: int  # already in the database
    ran: int  # run and stored now
    failed: int  # of those, refused by the engine (status 2)
    found: int  # of those, status 1 (a KUnit failure, a violation, an attack landed)

    def as_json(self) -> dict[str, int]:
        return {"runs": self.runs, "skipped": self.skipped, "ran": self.ran,
                "failed": self.failed, "found": self.found}  # fmt: skip


def run_point(
    run_id: str, scenario: str, name: str, costs: str | None, audit: str
) -> tuple[str, dict[str, Any] | None, str | None]:
    """Run one scenario (in a worker): ``(run_id, document, None)`` or, if the engine
    refuses it, ``(run_id, None, message)``."""
    from kpsim.engine.job import execute
    from kpsim.machine.scenario import parse_scenario

    try:
        doc = execute(parse_scenario(scenario, name), costs_path=costs, audit=audit,
                      details=True)  # fmt: skip
    except InputError as err:
        return run_id, None, str(err)
    return run_id, doc, None


def sweep(
    grid: Grid,
    results: Results,
    *,
    jobs: int | None = None,
    dask: str | None = None,
    on_result: ResultFn | None = None,
) -> SweepSummary:
    """Run the grid's runs that ``results`` lacks; store each as it finishes."""
    done = results.done()
    todo = [r for r in grid.runs if r.run_id not in done]
    by_id = {r.run_id: r for r in todo}
    failed = found = stored = 0
    outcomes = _dask(todo, grid, dask) if dask else _local(todo, grid, jobs)
    with closing(outcomes):  # an interrupted sweep stops its workers
        for run_id, doc, error in outcomes:
            run = by_id[run_id]
            if doc is None:
                results.add_failed(run_id, run.params, run.scenario, error or "")
                failed += 1
            else:
                results.add(run_id, run.params, run.scenario, doc)
                found += int(doc["status"] == 1)
            stored += 1
            if on_result is not None:
                on_result(stored, len(todo), run_id)
    return SweepSummary(len(grid.runs), len(grid.runs) - len(todo), stored, failed, found)


def _args(r: Run, grid: Grid) -> tuple[str, str, str, str | None, str]:
    return (r.run_id, r.scenario, r.name, grid.costs, grid.audit)


def _local(todo: list[Run], grid: Grid, jobs: int | None) -> Generator[Any, None, None]:
    """Outcomes from a local process pool, as they finish."""
    if not todo:
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_orphan_guard, initargs=(os.getpid(),)
    )
    try:
        pending = {pool.submit(run_point, *_args(r, grid)) for r in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: f.result()[0]):
                yield f.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _orphan_guard(parent: int) -> None:
    """In each pool worker: exit as soon as the sweep process is gone (killed with
    SIGKILL, its pool never told the workers to stop)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="kpsim-orphan-guard", daemon=True).start()


def _dask(todo: list[Run], grid: Grid, address: str) -> Generator[Any, None, None]:
    """Outcomes from a Dask distributed cluster, as they finish."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError(
            "--dask needs Dask distributed (pip install 'kpsim[dask]')", file=address
        ) from None
    if not todo:
        return
    try:
        client = Client(address, timeout="10s")  # type: ignore[no-untyped-call]
    except OSError as err:
        raise InputError(f"cannot reach the Dask scheduler: {err}", file=address) from None
    try:
        futures = [client.submit(run_point, *_args(r, grid), key=f"kpsim-run-{r.run_id}",
                                 pure=False) for r in todo]  # fmt: skip
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            yield future.result()
            future.release()
    finally:
        client.close()  # type: ignore[no-untyped-call]


def remaining(grid: Grid, results: Results) -> Iterable[Run]:
    """The grid's runs the database does not hold yet."""
    done = results.done()
    return [r for r in grid.runs if r.run_id not in done]
