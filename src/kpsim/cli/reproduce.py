"""``kpsim reproduce``: the series' benchmark set in the model, next to the published table.

Each published row names a built-in workload (``row.workload`` with ``row.params``,
kpsim's names, report/data/published_*.toml). The row's workload is run on fresh
machines: feature off, feature on with lazy-MMU batching, feature on without it (for
the v5-as-posted table, whose mock made ``set_memory_pkey()`` a no-op, the ON runs
are made with that call a no-op too), with the kpkeys behaviour of the posting the
table measured (``series`` in its data file: v4 for v4, v5 for both v5 tables).
What is done with the counted events of each run:

- by default they are priced with the shipped calibration
  (:mod:`kpsim.report.calibration`: the costs ``kpsim run`` and ``replay --cost``
  quote), every figure with its interval;
- ``--fit ROWS`` fits the ``--params`` costs on those rows and predicts the others
  (:func:`kpsim.report.fit.fit`);
- ``--cv`` cross-validates leaving one benchmark family out at a time, next to the
  trivial baselines, and checks the fit on the v4 table as a second test set
  (:mod:`kpsim.report.validate`); ``--write-calibration FILE`` writes the calibration.

With ``--arch x86`` the same rows are also run on x86 (PKS, the block-mapped direct map
with the PBA: the series' own allocator there, v5 and v4 being PTE-map-only minimal
allocators) and priced with the x86 priors alone, beside the arm64 figures: nothing is
published for x86, so those figures are not scored, and their range is the priors'
÷3/×3 sensitivity range (:func:`kpsim.engine.compare.prior_range`), as ``kpsim
compare`` gives it. Runs are cached per (workload, parameters, configuration), so a
run shared by several rows or modes is made once.

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

from kpsim.cli.arch_opts import add_arch_option
from kpsim.cli.common import add_json, check_writable, console, emit_json, int_arg
from kpsim.errors import InputError
from kpsim.events import Counters
from kpsim.report.calibration import (
    PROBE_SCALE,
    calibration,
    calibration_toml,
    costs_for,
    describe,
    inputs_digest,
)
from kpsim.report.cost import CostTable, load_costs, overhead
from kpsim.report.fit import (
    DEFAULT_FIT_ROWS,
    DEFAULT_PARAMS,
    FitResult,
    FitSpec,
    collect_counts,
    evaluate,
    fit,
    parse_params,
)
from kpsim.report.published import (
    MODES,
    TABLE_NAMES,
    Mode,
    PublishedRow,
    PublishedTable,
    load_table,
    select_rows,
)
from kpsim.report.validate import LEVEL, CVResult, constant_rows, cross_validate
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
    #: the machines' architecture, and their table allocator (None: the series')
    arch: str = "arm64"
    allocator: str | None = None
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
        self,
        workload: str,
        params: Mapping[str, Any],
        config: str,
        noop_pkey: bool,
        series: str = "v5",
    ) -> Counters:
        """The counts of one run of ``workload`` in ``config`` with the kpkeys behaviour
        of posting ``series`` (cached)."""
        from kpsim.machine.boot import Machine
        from kpsim.machine.config import MachineConfig
        from kpsim.workloads.registry import run_workload

        hardened, batching = CONFIGS[config]
        noop = noop_pkey and hardened
        key = (workload, tuple(sorted(params.items())), config, noop, series)
        got = self.cache.get(key)
        if got is not None:
            return got
        if self.progress is not None:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
            where = "" if self.arch == "arm64" else f" on {self.arch}"
            self.progress(f"{workload} ({shown}) {config}{' noop-pkey' if noop else ''}{where}")
        cfg = MachineConfig(
            arch=self.arch,
            allocator=self.allocator,
            memory=self.memory(workload),
            cpus=self.cpus,
            hardened_pgtables=hardened,
            batching=batching,
            seed=self.seed,
            series=series,
        )
        t0 = time.perf_counter()
        m = Machine.boot(cfg)
        if noop:
            # The v5 mock: set_memory_pkey() gated on system_supports_poe(), a no-op.
            m.arch.set_memory_pkey = lambda addr, numpages, pkey: 0
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
            off = self.run(row.workload, params, "off", noop, table.series)
            on = self.run(row.workload, params, f"on_{mode}", noop, table.series)
            part = str(row.params.get("time", "")) if row.workload == "kernbench" else ""
            return {"off": _time_part(off, part), "on": _time_part(on, part)}

        return provide


def probe_counts(table: PublishedTable) -> dict[str, dict[str, Counts]]:
    """Every row's counts at the calibration's probe scale (``PROBE_SCALE``, about a
    second in all): what :func:`kpsim.report.calibration.inputs_digest` hashes."""
    scale = PROBE_SCALE
    runs = ModelRuns(size=scale["size"], loops=scale["loops"], processes=scale["processes"])
    return collect_counts(runs.provider(table), table)


def calibration_digest(
    table: PublishedTable, params: str, prior_decades: float | None, base: CostTable | None
) -> str:
    """The ``inputs`` digest a calibration of ``table`` made now would record."""
    return inputs_digest(table, probe_counts(table), params, prior_decades, base)


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
    "pages (buddy path, priced by order), h:0 takes order-0 pages through "
    "alloc_pages_bulk, as arm64 Linux; the per-CPU lists' refills and drains are "
    "counted (h:1's vfree'd pages drain to the buddy, h:0's are reused); the fixed "
    "per-call costs of vmalloc, vfree, "
    "vm_map_ram and vm_unmap_ram scale together (one fitted parameter of the calibration).",
    "munmap": "micromm h:1: folio batching is a count (fork_folio/zap_folio), the PTE "
    "writes are the same as h:0; THP frees are reported as Linux makes them.",
}


# --------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce",
        help="run the series' benchmarks in the model and compare with a published table",
        description="Price the series' benchmarks with the shipped calibrated costs (the "
        "figures kpsim run quotes), or fit costs on some rows (--fit) and predict the "
        "others, or cross-validate leaving one benchmark family out (--cv).",
    )
    p.add_argument(
        "--table",
        default="v5-corrected",
        choices=TABLE_NAMES,
        help="published table (default v5-corrected)",
    )
    p.add_argument(
        "--fit",
        default=None,
        metavar="ROWS",
        help="fit the --params costs on these rows and predict the others (e.g. "
        f"{DEFAULT_FIT_ROWS}); groups kernbench, fork, munmap, vmalloc, vm_map_ram, tests "
        "or keys. Without it the shipped calibration's costs are used, no fit",
    )
    p.add_argument(
        "--cv",
        action="store_true",
        help="leave-one-family-out cross-validation with trivial baselines and the v4 "
        "table as a second test set",
    )
    p.add_argument("--rows", default="all", metavar="ROWS", help="rows to run at all (default all)")
    p.add_argument(
        "--params",
        default=None,
        metavar="GROUPS",
        help="costs fitted, '+' groups scale together (default: the calibration's, "
        f"{DEFAULT_PARAMS})",
    )
    p.add_argument(
        "--costs",
        metavar="FILE",
        help="cost file over the priors ('defaults': the priors alone) instead of the "
        "calibration; with --fit/--cv the fit starts from it",
    )
    p.add_argument(
        "--prior",
        type=float,
        default=1.0,
        metavar="DECADES",
        help="with --fit/--cv: a log-normal prior on each fitted cost centred on its "
        "start, this many decades as one standard deviation (default 1; 0: none)",
    )
    p.add_argument("--write-costs", metavar="FILE", help="write the fitted costs here")
    p.add_argument(
        "--write-calibration",
        metavar="FILE",
        help="with --cv: write the calibration (full-fit costs, interval spreads) here",
    )
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
    add_arch_option(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size, what="--size")
    if size < 2 << 20 or size % (2 << 20) or size > 16 * SZ_1G:
        raise InputError(f"--size: must be a multiple of 2M between 2M and 16G, got {args.size}")
    for flag, value in (("--loops", args.loops), ("--processes", args.processes)):
        if value < 1:
            raise InputError(f"{flag}: must be at least 1, got {value}")
    if not args.prior >= 0 or args.prior > 10:
        raise InputError(f"--prior: must be between 0 and 10 decades, got {args.prior}")
    if args.cv and args.fit is not None:
        raise InputError("--cv fits every fold itself: it takes no --fit")
    x86 = args.arch == "x86"
    if x86 and (args.cv or args.fit is not None):
        flag = "--cv" if args.cv else "--fit"
        raise InputError(
            f"--arch x86 with {flag}: a fit needs measurements, and the published tables "
            "measured arm64 only; `--arch x86` alone sets x86's prior-only figures beside them"
        )
    if args.write_calibration and not args.cv:
        raise InputError("--write-calibration FILE applies only with --cv")
    for path, what in ((args.write_costs, "costs"), (args.write_calibration, "calibration")):
        if path:
            check_writable(path, what)
    if args.write_costs and args.fit is None and not args.cv:
        raise InputError("--write-costs FILE applies only with --fit or --cv")
    table = load_table(args.table)
    rows = select_rows(table, args.rows)
    if args.fit is not None and not select_rows(table, args.fit) & rows:
        raise InputError(f"--fit {args.fit}: none of those rows is in --rows {args.rows}")
    params = args.params or (calibration().params if args.fit is None else DEFAULT_PARAMS)
    if args.fit is not None or args.cv:
        base: CostTable = load_costs(None if args.costs == "defaults" else args.costs)
        label = "priors" if args.costs in (None, "defaults") else f"file {args.costs}"
    else:
        base, label = costs_for(args.costs)
    parse_params(params, base)  # a bad --params: before the model runs, not after
    err = console() if sys.stderr.isatty() else None

    def progress(msg: str) -> None:
        if err is not None:
            sys.stderr.write(f"\r\x1b[K  running {msg}")
            sys.stderr.flush()

    runs = ModelRuns(size=size, loops=args.loops, processes=args.processes,
                     progress=progress)  # fmt: skip
    t0 = time.perf_counter()
    counts = collect_counts(runs.provider(table, rows), table)
    model = {"micromm_size": size, "vmalloc_loops": args.loops,
             "kernbench_processes": args.processes}  # fmt: skip
    if args.cv:
        spec = FitSpec(params=params, costs=base, prior_decades=args.prior or None)
        cv = cross_validate(table, counts, spec)
        second = None
        if table.name != "v4":
            v4 = load_table("v4")
            second = _second_set(v4, collect_counts(runs.provider(v4), v4), cv)
        _finish(err)
        elapsed = time.perf_counter() - t0
        if args.write_calibration:
            digest = calibration_digest(table, params, args.prior or None, base)
            text = calibration_toml(cv, _command(args), digest, args.prior or None)
            _write(args.write_calibration, text, "calibration")
        if args.write_costs:
            cv.full.write_costs(args.write_costs)
        if args.json:
            doc = cv.to_json()
            doc["start_costs"] = label
            doc["prior_decades"] = args.prior or None
            doc["second_test_set"] = second
            doc["model"] = dict(model, seconds=round(elapsed, 2), runs=len(runs.cache))
            emit_json(doc)
            return 0
        prior = f"; prior sd {args.prior:g} decade(s) per parameter" if args.prior else ""
        _print_cv(console(), table, cv, second, label + prior, elapsed, len(runs.cache))
        return 0
    if args.fit is not None:
        spec = FitSpec(fit_rows=args.fit, params=params, costs=base,
                       prior_decades=args.prior or None)  # fmt: skip
        result = fit(table, counts, spec)
        label = f"fitted on {args.fit} (from {label})"
    else:
        result = evaluate(table, counts, base)
    _finish(err)
    elapsed = time.perf_counter() - t0
    if args.write_costs:
        result.write_costs(args.write_costs)
    constant = constant_rows(table, counts)
    x86_side = None
    if x86:
        x86_runs = ModelRuns(size=size, loops=args.loops, processes=args.processes,
                             progress=progress, arch="x86", allocator=X86_ALLOCATOR)  # fmt: skip
        x86_side = x86_rows(table, collect_counts(x86_runs.provider(table, rows), table))
        _finish(err)
        elapsed = time.perf_counter() - t0
        runs.cache.update({("x86", *k): v for k, v in x86_runs.cache.items()})
    if args.json:
        doc = result.to_json()
        doc["costs_used"] = label
        doc["calibration"] = describe(calibration())
        doc["constant_rows"] = sorted(constant)
        for r, d in zip(result.rows, doc["rows"], strict=True):
            d["interval"] = _interval_json(r.modelled, r.mode, label)
            d["scored"] = r.key not in constant and r.modelled is not None
        doc["notes"] = _notes(table, result)
        doc["model"] = dict(model, seconds=round(elapsed, 2), runs=len(runs.cache))
        if x86_side is not None:
            doc["x86"] = x86_side
        emit_json(doc)
        return 0
    _print(console(), table, result, args, label, constant, elapsed, len(runs.cache))
    if x86_side is not None:
        _print_x86(console(), result, x86_side)
    return 0


#: the x86 side's table allocator: the PBA, the series' choice on a block-mapped direct
#: map (the tables' v5/v4 minimal allocator needs a PTE-mapped one)
X86_ALLOCATOR = "pba"
X86_NOTE = (
    "x86 PKS (block-mapped direct map, PBA), the same workloads; priced with the x86 "
    "priors alone (report/data/costs-x86.toml over costs.toml): nothing is published for "
    "x86, so nothing here is fitted or scored, and the range is the priors' ÷3/×3 "
    "sensitivity range, not a confidence interval"
)


def x86_rows(table: PublishedTable, counts: Mapping[str, Any]) -> dict[str, Any]:
    """The x86 side of ``reproduce --arch x86``: per row and mode, the prior-only
    overhead and its sensitivity range (:func:`kpsim.engine.compare.prior_range`) and
    the pkey-register and TLB events it added."""
    from kpsim.engine.compare import event_groups, prior_range
    from kpsim.machine.config import MachineConfig

    constant = constant_rows(table, counts)
    out = []
    for row in table.rows:
        for mode in MODES:
            got = counts.get(row.key, {})
            on, off = got.get(f"on_{mode}"), got.get(f"off_{mode}")
            if on is None or off is None:
                continue
            rng = None if row.key in constant else prior_range(on, off, "x86")
            out.append({"key": row.key, "mode": mode,
                        "published_arm64": row.figure(mode).percent,
                        "overhead": rng, "events": event_groups(on, off)})  # fmt: skip
    cfg = MachineConfig(arch="x86", allocator=X86_ALLOCATOR, series=table.series)
    machine = {"arch": cfg.arch, "linear_map": cfg.linear_map,
               "allocator": cfg.effective_allocator, "series": cfg.series}  # fmt: skip
    return {"machine": machine, "note": X86_NOTE, "rows": out}


def _print_x86(c: Any, result: FitResult, side: Mapping[str, Any]) -> None:
    modelled = {(r.key, r.mode): r.modelled for r in result.rows}
    c.print("")
    c.print(f"x86: {side['note']}")
    c.print(f"{'row':40} {'mode':11} {'published':>9} {'arm64':>8} {'x86 priors':>10} "
            f"{'range':>16}  x86 events added")  # fmt: skip
    for r in side["rows"]:
        ov = r["overhead"]
        pct, rng = ("constant", "") if ov is None else (
            _fmt(ov["percent"]), f"[{ov['lo']:+.1f}, {ov['hi']:+.1f}]")  # fmt: skip
        added = [g for g in r["events"] if g["added"] > 0]
        ev = ", ".join(f"{g['group']} +{g['added']}" for g in added[:4])
        ev += ", ..." if len(added) > 4 else ""
        arm = _fmt(modelled.get((r["key"], r["mode"])))
        c.print(f"{r['key'][:40]:40} {r['mode']:11} {r['published_arm64']:>9.2f} {arm:>8} "
                f"{pct:>10} {rng:>16}  {ev}")  # fmt: skip


def _finish(err: Any) -> None:
    if err is not None:
        sys.stderr.write("\r\x1b[K")


def _write(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"cannot write {what}: {e.strerror or e}", file=path) from None


def _command(args: argparse.Namespace) -> str:
    parts = ["kpsim reproduce --cv", f"--table {args.table}"]
    if args.params:
        parts.append(f"--params {args.params}")
    parts.append(f"--prior {args.prior:g}")
    if args.size != "1G":
        parts.append(f"--size {args.size}")
    if args.loops != 200:
        parts.append(f"--loops {args.loops}")
    if args.processes != 8:
        parts.append(f"--processes {args.processes}")
    if args.costs:
        parts.append(f"--costs {args.costs}")
    return " ".join(parts) + " --write-calibration FILE"


def _interval_json(x: float | None, mode: Mode, label: str) -> dict[str, Any] | None:
    if x is None:
        return None
    from kpsim.report.calibration import overhead_interval

    return overhead_interval(x, mode == "batching", label).as_json()


def _second_set(v4: PublishedTable, counts: Mapping[str, Any], cv: CVResult) -> dict[str, Any]:
    """The full fit's costs on the v4 table (another kernel base): a second test set,
    next to the zero and mean baselines (mean of the fitted table's rows)."""
    constant = constant_rows(v4, counts)
    out: dict[str, Any] = {"table": v4.name, "mae": {}, "rows": []}
    for mode in ("batching", "no_batching"):
        train = [p.published for p in cv.points if p.mode == mode and p.scored]
        mean = sum(train) / len(train) if train else 0.0
        errs: dict[str, dict[str, list[float]]] = {
            s: {"model": [], "zero": [], "mean": []} for s in ("significant", "all")
        }
        for row in v4.rows:
            rc = counts.get(row.key)
            if rc is None or row.key in constant:
                continue
            x = overhead(rc[f"on_{mode}"], rc[f"off_{mode}"], cv.full.costs)
            fig = row.figure(mode)
            rec = {"key": row.key, "mode": mode, "published": fig.percent,
                   "significant": fig.significant, "modelled": round(x, 4)}  # fmt: skip
            out["rows"].append(rec)
            for s in ("significant", "all"):
                if s == "significant" and not fig.significant:
                    continue
                errs[s]["model"].append(abs(x - fig.percent))
                errs[s]["zero"].append(abs(fig.percent))
                errs[s]["mean"].append(abs(mean - fig.percent))
        out["mae"][mode] = {
            s: {k: (round(sum(v) / len(v), 4) if v else None) for k, v in d.items()}
            for s, d in errs.items()
        }
    return out


def _notes(table: PublishedTable, result: FitResult) -> list[str]:
    run = {r.key for r in result.rows if r.modelled is not None}
    groups = {row.group for row in table.rows if row.key in run}
    return [text for group, text in NOTES.items() if group in groups]


def _fmt(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


_COUNTED = (
    "Counted (exact): the events of each model run (--json: the counts behind every row). "
    "Estimated: every % figure below (counts x costs), with its interval."
)


def _print(c: Any, table: PublishedTable, result: FitResult, args: argparse.Namespace,
           label: str, constant: frozenset[str], elapsed: float, runs: int) -> None:  # fmt: skip
    from kpsim.report.calibration import overhead_interval

    c.print(f"kpsim reproduce: table {table.name} ({table.title})")
    c.print(f"  costs: {label}")
    if args.fit is not None:
        run_fit = len({r.key for r in result.rows if r.fitted and r.modelled is not None})
        c.print(f"  {len(result.params)} parameters fitted on {run_fit} of the "
                f"{len(result.fit_rows)} --fit rows, both columns: "
                + ", ".join(f"{k} = {v:.4g} cycles" + (" (not fitted: base cost)"
                                                       if k in result.unidentified else "")
                            for k, v in result.params.items()))  # fmt: skip
    c.print(_COUNTED)
    c.print("")
    c.print(
        "published, modelled: % change with the feature on; error: modelled - published, "
        "in percentage points (pp); interval: the calibration's held-out spread"
    )
    c.print("(R)/(I): a regression/improvement the publication marked significant")
    head = f"{'benchmark':16} {'class':30} {'mode':11} {'published':>10} {'modelled':>9} " \
           f"{'interval':>16} {'error':>7}  {'':9} top events (pp)"  # fmt: skip
    c.print(head)
    for r in result.rows:
        mark = f"({r.mark}) " if r.mark else ""
        pub = f"{mark}{r.published:.2f}"
        if r.modelled is None:
            role, iv = "not run", ""
        elif r.key in constant:
            role, iv = "constant", ""
        else:
            role = "fitted" if r.fitted else ("predicted" if args.fit is not None else "")
            i = overhead_interval(r.modelled, r.mode == "batching", label)
            iv = f"[{i.lo:+.1f}, {i.hi:+.1f}]"
        noise = "" if r.mark else " ~noise"
        top = ", ".join(f"{n} {pp:+.1f}" for n, pp in r.top)
        c.print(f"{r.benchmark:16} {r.result_class[:30]:30} {r.mode:11} {pub:>10} "
                f"{_fmt(r.modelled):>9} {iv:>16} {_fmt(r.error):>7}  {role:9}{noise:7} "
                f"{top}")  # fmt: skip
    c.print("")
    what = "predicted" if args.fit is not None else "modelled (costs not fitted in this run)"
    for mode in ("batching", "no_batching"):
        errs = [r for r in result.rows if r.mode == mode and r.error is not None
                and not r.fitted and r.key not in constant]  # fmt: skip
        sig = [abs(r.error) for r in errs if r.mark and r.error is not None]
        allr = [abs(r.error) for r in errs if r.error is not None]
        m_all = _fmt(sum(allr) / len(allr) if allr else None, False)
        m_sig = _fmt(sum(sig) / len(sig) if sig else None, False)
        c.print(f"MAE over {what} rows, {mode:11}: {m_all} pp  (significant rows only: {m_sig})")
    if args.fit is None:
        c.print("note: the calibration was fitted on these rows, so this MAE is in-sample; "
                "the honest figure is `kpsim reproduce --cv`")  # fmt: skip
    if constant:
        c.print(f"not scored (constant by construction: ON and OFF counts equal): "
                f"{', '.join(sorted(constant))}")  # fmt: skip
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


def _print_cv(c: Any, table: PublishedTable, cv: CVResult, second: dict[str, Any] | None,
              label: str, elapsed: float, runs: int) -> None:  # fmt: skip
    c.print(f"kpsim reproduce --cv: table {table.name}, leave one benchmark family out")
    n = sum(cv.n_rows.values())
    c.print(f"  {cv.n_params} parameters ({', '.join(cv.params)}) | {n} scored (row, column) "
            f"points, {cv.n_rows['batching']} per column; start costs: {label}")  # fmt: skip
    c.print(_COUNTED)
    c.print("")
    c.print(f"{'row':28} {'mode':11} {'published':>10} {'held-out':>9} {'interval':>16} "
            f"{'error':>7} {'zero':>6} {'mean':>7} {'analogy':>8}")  # fmt: skip
    for p in cv.points:
        mark = "*" if p.significant else " "
        if not p.scored or p.predicted is None:
            c.print(
                f"{p.key:28} {p.mode:11} {p.published:>9.2f}{mark} {'constant, not scored':>26}"
            )
            continue
        iv = cv.interval(p.predicted, p.mode)
        b = p.baselines
        c.print(f"{p.key:28} {p.mode:11} {p.published:>9.2f}{mark} {p.predicted:>+9.2f} "
                f"{f'[{iv.lo:+.1f}, {iv.hi:+.1f}]':>16} {p.predicted - p.published:>+7.2f} "
                f"{b['zero']:>6.1f} {b['mean']:>7.2f} {b['analogy']:>8.2f}")  # fmt: skip
    c.print("* significant in the publication")
    c.print("")
    c.print(f"MAE (pp) on held-out rows   {'model':>7} {'zero':>7} {'mean':>7} {'analogy':>8}"
            f"   best baseline / model")  # fmt: skip
    for mode in ("batching", "no_batching"):
        for sub in ("significant", "all"):
            d = cv.mae[mode][sub]
            best = min(
                v for k, v in d.items() if k in ("zero", "mean", "analogy") and v is not None
            )
            ratio = f"{best / d['model']:.2f}x" if d["model"] else "-"
            c.print(f"  {mode:11} {sub:12} {int(d['n'] or 0):>3} {_fmt(d['model'], False):>7} "
                    f"{_fmt(d['zero'], False):>7} {_fmt(d['mean'], False):>7} "
                    f"{_fmt(d['analogy'], False):>8}   {ratio}")  # fmt: skip
    c.print("")
    c.print(f"intervals: +/- spread x (|x| + 5 pp), spread = {cv.spread['batching']:.3f} "
            f"(batching), {cv.spread['no_batching']:.3f} (no batching): "
            f"the {LEVEL:.0%} quantile of "
            "held-out relative residuals")  # fmt: skip
    cov = ", ".join(
        f"{m} {_fmt(None if v is None else 100 * v, False)} %" for m, v in cv.coverage.items()
    )
    c.print(f"coverage of held-out rows (each family's spread from the other families): {cov}")
    c.print("full fit (all scored rows): "
            + ", ".join(f"{k} = {v:.4g}" for k, v in cv.full.params.items()))  # fmt: skip
    for fam, ps in cv.folds.items():
        c.print(f"  fold without {fam:18}: " + ", ".join(f"{k} = {v:.4g}" for k, v in ps.items()))
    c.print("parameters at a bound: " + (", ".join(cv.at_bound) if cv.at_bound else "none"))
    if second is not None:
        c.print("")
        c.print(f"second test set: table {second['table']} (another kernel base), full-fit costs")
        for mode, subs in second["mae"].items():
            for sub, d in subs.items():
                c.print(f"  {mode:11} {sub:12} model {_fmt(d['model'], False):>6} pp, zero "
                        f"{_fmt(d['zero'], False)}, mean {_fmt(d['mean'], False)}")  # fmt: skip
    for w in cv.warnings:
        c.print(f"warning: {w}")
    c.print(f"{runs} model runs in {elapsed:.1f} s")
