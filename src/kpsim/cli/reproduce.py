"""``kpsim reproduce``: the series' benchmark set in the model, next to the published table.

Each published row names a built-in workload (``row.workload`` with ``row.params``,
kpsim's names, report/data/published_*.toml). The row's workload is run on fresh
machines: feature off, feature on with lazy-MMU batching, feature on without it (for
the v5-as-posted table, whose mock made ``set_memory_pkey()`` a no-op, the ON runs
are made with that call a no-op too). The counted events of each run go to
:func:`kpsim.report.fit.reproduce`, which fits the unknown costs on the ``--fit`` rows
and predicts the others. Runs are cached per (workload, parameters, configuration),
so a run shared by several rows or modes is made once.

kernbench rows: ``system time`` is every counted event except the user-space cycles
(``other_cycles``), ``user time`` is the user-space cycles only, ``real time`` is all
of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kpsim.cli.common import add_json, check_writable, console, emit_json, int_arg
from kpsim.errors import InputError
from kpsim.events import Counters
from kpsim.report.cost import CostTable, load_costs
from kpsim.report.fit import (
    DEFAULT_FIT_ROWS,
    DEFAULT_PARAMS,
    FitResult,
    FitSpec,
    parse_params,
    reproduce,
)
from kpsim.report.published import (
    TABLE_NAMES,
    Mode,
    PublishedRow,
    PublishedTable,
    load_table,
    select_rows,
)
from kpsim.units import SZ_1G, parse_size

Counts = Mapping[str, float]

#: The configurations a row is run in: (hardened_pgtables, batching).
CONFIGS: dict[str, tuple[bool, bool]] = {
    "off": (False, True),
    "on_batching": (True, True),
    "on_no_batching": (True, False),
}


@dataclass
class ModelRuns:
    """Runs the workloads behind published rows, once per configuration (cached).

    ``size`` is micromm's mapping (the benchmark's 1 GiB by default), ``loops`` the
    test_vmalloc loop count, ``processes`` kernbench's compiler runs.
    """

    size: int = SZ_1G
    loops: int = 200
    processes: int = 8
    cpus: int = 2
    seed: int = 0
    progress: Callable[[str], None] | None = None
    cache: dict[tuple[Any, ...], Counters] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def memory(self, workload: str) -> int:
        if workload.startswith("micromm."):
            need = 2 * self.size + (512 << 20)
            return max(512 << 20, (need + (1 << 21) - 1) & ~((1 << 21) - 1))
        return 512 << 20

    def params(self, row: PublishedRow) -> dict[str, Any]:
        """The row's parameters for its workload, plus the run's scale."""
        from kpsim.workloads.registry import WORKLOADS

        wd = WORKLOADS.get(row.workload)
        if wd is None:
            raise InputError(f"row {row.key}: no built-in workload {row.workload!r}")
        names = {p.name for p in wd.params}
        out = {k: v for k, v in row.params.items() if k in names}
        scale = {"size": self.size, "loops": self.loops, "processes": self.processes}
        out.update({k: v for k, v in scale.items() if k in names})
        return out

    def run(
        self, workload: str, params: Mapping[str, Any], config: str, noop_pkey: bool
    ) -> Counters:
        """The counts of one run of ``workload`` in ``config`` (cached)."""
        from kpsim.machine.boot import Machine
        from kpsim.machine.config import MachineConfig
        from kpsim.workloads.registry import run_workload

        hardened, batching = CONFIGS[config]
        noop = noop_pkey and hardened
        key = (workload, tuple(sorted(params.items())), config, noop)
        got = self.cache.get(key)
        if got is not None:
            return got
        if self.progress is not None:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
            self.progress(f"{workload} ({shown}) {config}{' noop-pkey' if noop else ''}")
        cfg = MachineConfig(
            memory=self.memory(workload),
            cpus=self.cpus,
            hardened_pgtables=hardened,
            batching=batching,
            seed=self.seed,
        )
        t0 = time.perf_counter()
        m = Machine.boot(cfg)
        if noop:
            # The v5 mock: set_memory_pkey() gated on system_supports_poe(), a no-op.
            m.arch.set_memory_pkey = lambda addr, numpages, pkey: 0  # type: ignore[method-assign]
        got = run_workload(m, workload, params, seed=self.seed)
        self.seconds[workload] = self.seconds.get(workload, 0.0) + time.perf_counter() - t0
        self.cache[key] = got
        return got

    def provider(self, table: PublishedTable, rows: frozenset[str] | None = None) -> Callable[
        [PublishedRow, Mode], dict[str, Counts] | None
    ]:  # fmt: skip
        """A counts provider for :func:`kpsim.report.fit.reproduce` over ``table``."""
        noop = table.set_memory_pkey_noop

        def provide(row: PublishedRow, mode: Mode) -> dict[str, Counts] | None:
            if rows is not None and row.key not in rows:
                return None
            params = self.params(row)
            off = self.run(row.workload, params, "off", noop)
            on = self.run(row.workload, params, f"on_{mode}", noop)
            part = str(row.params.get("time", "")) if row.workload == "kernbench" else ""
            return {"off": _time_part(off, part), "on": _time_part(on, part)}

        return provide


def _time_part(counts: Counters, part: str) -> dict[str, float]:
    """kernbench's real/system/user split of a run's counts (see module docstring).

    Levels such as ``PageTables`` (a delta that can be negative) are not events: dropped.
    """
    counts = Counters({k: v for k, v in counts.items() if k not in _LEVELS})
    if part == "system":
        return {k: v for k, v in counts.items() if k != "other_cycles"}
    if part == "user":
        return {k: v for k, v in counts.items() if k == "other_cycles"}
    return dict(counts)


_LEVELS = frozenset({"PageTables"})

#: What the model cannot reproduce, by row group (docs/fidelity.md, "Workloads and
#: kpsim reproduce"); printed under the table when such rows were run.
NOTES: dict[str, str] = {
    "kernbench": "kernbench: most of a real build's system time (VFS, page cache, exec "
    "loading, scheduler) is not modelled; it enters only through the assumed `syscall` "
    "cost, so kernbench's system-time figures rest on that prior; user time does not "
    "change by construction.",
    "vmalloc": "fix_size_alloc h:1 maps 64 KiB contiguous-PTE blocks from split order-4 "
    "pages, one walk and lazy-MMU section per 64 KiB, as arm64 Linux; but the cost model "
    "charges an order-4 allocation like an order-0 one (no pcp/buddy or alloc_pages_bulk "
    "difference), so the h:1 baseline is about half the h:0 one where the published rows "
    "imply a larger one: h:1 overheads come out too high.",
    "munmap": "micromm h:1: folio batching is a count (fork_folio/zap_folio), the PTE "
    "writes are the same as h:0; THP frees are reported as Linux makes them.",
}


# --------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce",
        help="run the series' benchmarks in the model and compare with a published table",
        description="Fit the unknown costs on some published rows (--fit) and predict the "
        "others; prints published, modelled and error per row and the mean absolute error "
        "over the predicted rows.",
    )
    p.add_argument(
        "--table",
        default="v5-corrected",
        choices=TABLE_NAMES,
        help="published table (default v5-corrected)",
    )
    p.add_argument(
        "--fit",
        default=DEFAULT_FIT_ROWS,
        metavar="ROWS",
        help=f"rows the costs are fitted on (default {DEFAULT_FIT_ROWS}); "
        "groups kernbench, fork, munmap, vmalloc, vm_map_ram, tests or keys",
    )
    p.add_argument("--rows", default="all", metavar="ROWS", help="rows to run at all (default all)")
    p.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        metavar="GROUPS",
        help=f"costs fitted, '+' groups scale together (default {DEFAULT_PARAMS})",
    )
    p.add_argument("--costs", metavar="FILE", help="cost file: overrides the defaults")
    p.add_argument("--write-costs", metavar="FILE", help="write the fitted costs here")
    p.add_argument(
        "--size",
        default="1G",
        metavar="SIZE",
        help="micromm mapping size (default 1G, the benchmark's)",
    )
    p.add_argument(
        "--loops",
        type=int_arg,
        default=200,
        metavar="N",
        help="test_vmalloc loop count (default 200)",
    )
    p.add_argument(
        "--processes",
        type=int_arg,
        default=8,
        metavar="N",
        help="kernbench compiler runs (default 8)",
    )
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size, what="--size")
    if size < 2 << 20 or size % (2 << 20) or size > 16 * SZ_1G:
        raise InputError(f"--size: must be a multiple of 2M between 2M and 16G, got {args.size}")
    for flag, value in (("--loops", args.loops), ("--processes", args.processes)):
        if value < 1:
            raise InputError(f"{flag}: must be at least 1, got {value}")
    if args.write_costs:
        check_writable(args.write_costs, "costs")
    table = load_table(args.table)
    rows = select_rows(table, args.rows)
    fit_rows = select_rows(table, args.fit)
    if not fit_rows & rows:
        raise InputError(f"--fit {args.fit}: none of those rows is in --rows {args.rows}")
    base: CostTable = load_costs(args.costs)
    parse_params(args.params, base)  # a bad --params: before the model runs, not after
    c = console()
    err = console() if sys.stderr.isatty() else None

    def progress(msg: str) -> None:
        if err is not None:
            sys.stderr.write(f"\r\x1b[K  running {msg}")
            sys.stderr.flush()

    runs = ModelRuns(size=size, loops=args.loops, processes=args.processes,
                     progress=progress)  # fmt: skip
    t0 = time.perf_counter()
    spec = FitSpec(fit_rows=args.fit, params=args.params, costs=base)
    result = reproduce(runs.provider(table, rows), table, spec)
    elapsed = time.perf_counter() - t0
    if err is not None:
        sys.stderr.write("\r\x1b[K")
    if args.write_costs:
        result.write_costs(args.write_costs)
    if args.json:
        doc = result.to_json()
        doc["notes"] = _notes(table, result)
        doc["model"] = {"micromm_size": size, "vmalloc_loops": args.loops,
                        "kernbench_processes": args.processes, "seconds": round(elapsed, 2),
                        "runs": len(runs.cache)}  # fmt: skip
        emit_json(doc)
        return 0
    _print(c, table, result, args, elapsed, len(runs.cache))
    return 0


def _notes(table: PublishedTable, result: FitResult) -> list[str]:
    run = {r.key for r in result.rows if r.modelled is not None}
    groups = {row.group for row in table.rows if row.key in run}
    return [text for group, text in NOTES.items() if group in groups]


def _fmt(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _print(c: Any, table: PublishedTable, result: FitResult, args: argparse.Namespace,
           elapsed: float, runs: int) -> None:  # fmt: skip
    c.print(f"kpsim reproduce: table {table.name} ({table.title})")
    run_fit = len({r.key for r in result.rows if r.fitted and r.modelled is not None})
    c.print(f"  fitted on: {args.fit}  ({run_fit} of its {len(result.fit_rows)} rows run)")
    c.print("  costs fitted: "
            + ", ".join(f"{k} = {v:.4g} cycles" + (" (not fitted: base cost)"
                                                  if k in result.unidentified else "")
                        for k, v in result.params.items()))  # fmt: skip
    c.print("")
    c.print(
        "published, modelled: % change with the feature on; error: modelled - published, "
        "in percentage points (pp)"
    )
    c.print("(R)/(I): a regression/improvement the publication marked significant")
    head = f"{'benchmark':16} {'class':34} {'mode':11} {'published':>10} {'modelled':>9} " \
           f"{'error':>7}  {'':9} top events (pp)"  # fmt: skip
    c.print(head)
    for r in result.rows:
        mark = f"({r.mark}) " if r.mark else ""
        pub = f"{mark}{r.published:.2f}"
        role = "fitted" if r.fitted else ("predicted" if r.modelled is not None else "not run")
        noise = "" if r.mark else " ~noise"
        top = ", ".join(f"{n} {pp:+.1f}" for n, pp in r.top)
        c.print(f"{r.benchmark:16} {r.result_class:34} {r.mode:11} {pub:>10} "
                f"{_fmt(r.modelled):>9} {_fmt(r.error):>7}  {role:9}{noise:7} {top}")  # fmt: skip
    c.print("")
    for mode in ("batching", "no_batching"):
        c.print(f"MAE over predicted rows, {mode:11}: {_fmt(result.mae_predicted[mode], False)} pp"
                f"  (significant rows only: {_fmt(result.mae_predicted_significant[mode], False)};"
                f" fitted rows: {_fmt(result.mae_fitted[mode], False)})")  # fmt: skip
    c.print(
        "Rows marked ~noise were not statistically significant in the publication: their "
        "published value is within run-to-run noise, so an error there says little."
    )
    for w in result.warnings:
        c.print(f"warning: {w}")
    for note in _notes(table, result):
        c.print(f"note: {note}")
    c.print(f"{runs} model runs in {elapsed:.1f} s")
    if args.write_costs:
        c.print(f"fitted costs written to {args.write_costs}")
