"""The main job (``kpsim run``, issue 7 item 5): one engine, a plain result document.

Given a scenario (``kpsim.machine.scenario``; :data:`DEFAULT_SCENARIO` is the built-in
one, shipped as ``examples/scenarios/default.toml``), :func:`execute`:

1. boots the scenario's machine before ``mark_rodata_ro`` and runs the KUnit suite
   ``kpkeys_hardened_pgtables`` on it, marks rodata read-only and audits it;
2. runs every ``[[workload]]`` twice, each time on a freshly booted machine: with
   ``kpkeys_hardened_pgtables`` on and with it off (same machine, same seed), keeps the
   counter delta of each run and audits each machine afterwards;
3. prices both runs with the cost model (``report/cost.py``; a costs file overrides
   entries): the overhead is the estimate on against off, decomposed into the events
   that differ;
4. records the linear map's composition at boot and after each feature-on run;
5. runs the ``[attack]`` campaign (``kpsim.attack``) on a fresh feature-on machine
   and, as its negative control, on a feature-off one.

The result is one JSON-able dict (``kpsim run --json`` prints it as is; the sweep
stores it; the HTML report reads it). Its ``status`` is 1 if a KUnit case fails, the
audit finds a violation or an in-threat-model attack write lands with the feature on.
Bad input is an ``InputError`` raised before anything runs.

The audit (``audit=``): ``"end"`` (the default) audits every machine at the end of its
run (after boot, after each workload run, after each attack campaign); ``"full"`` also
watches the buddy allocator's free path while each workload runs
(:class:`kpsim.audit.freewatch.FreeWatch`: no page may reach it keyed); ``"none"``
audits nothing (for large machines, where the audit's walk of every table dominates).

With ``details=True`` (the sweep and the HTML report ask for it; ``kpsim run --json``
does not) the document also carries, for each feature-on workload run, the linear map
it left (``on.linear_map``: leaves by size, block share, keyed and cached pages, splits
since boot, the allocator's sampled timeline) and, under ``ptdump``, the linear map's
merged runs (offset, size, mapping size, pkey) at boot and after each feature-on run.

A scenario whose ``[kernel]`` turns ``hardened_pgtables`` off runs each workload once,
feature off, and reports no overhead (there is nothing to compare).
"""

from __future__ import annotations

import dataclasses
import errno
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from kpsim.errors import ConfigError, InputError, OutOfMemory
from kpsim.machine.boot import Machine
from kpsim.machine.config import MachineConfig
from kpsim.machine.scenario import Scenario, WorkloadSpec, machine_config

__all__ = [
    "AUDIT_MODES",
    "DEFAULT_SCENARIO",
    "DEFAULT_SCENARIO_NAME",
    "OPTION_FIELDS",
    "ProgressFn",
    "execute",
    "merge_details",
    "split_details",
    "validate_workloads",
    "workload_label",
]

DEFAULT_SCENARIO_NAME = "<built-in default scenario>"

#: The scenario ``kpsim run`` runs with no argument (``examples/scenarios/default.toml``
#: holds the same text). micromm maps 128 MiB instead of the series' 1 GiB so that the
#: whole run takes seconds; its costs grow linearly with the size on both sides, so the
#: overhead (a ratio) barely moves (see docs/fidelity.md).
DEFAULT_SCENARIO = """\
# kpsim's built-in default scenario: what `kpsim run` runs with no argument.
# A small arm64 machine with POE, kpkeys_hardened_pgtables on (PTE-mapped linear map,
# minimal allocator, batching on; with --arch x86, PKS, a block-mapped direct map and
# the PBA), running the series' benchmarks (RFC v5 cover letter) at reduced sizes.
# Each workload runs with the feature on and off on fresh machines.
seed = 0

[machine]
memory = "1G"
cpus = 2
poe = true

[kernel]
# linear_map: the architecture's default: "pte" on arm64 (what the seed assumes), "block"
# on x86 (--arch x86: the direct map in 1G/2M pages, probe_page_size_mask's choice)
hardened_pgtables = true
batching = true
pt_reclaim = true

[[workload]]
name = "kernbench"
processes = 24

[[workload]]
name = "micromm.fork"
size = "128M"
h = 0

[[workload]]
name = "micromm.fork"
size = "128M"
h = 1

[[workload]]
name = "micromm.munmap"
size = "128M"
h = 0

[[workload]]
name = "micromm.munmap"
size = "128M"
h = 1

[[workload]]
name = "vmalloc.fix_size_alloc"
pages = 1

[[workload]]
name = "vmalloc.fix_size_alloc"
pages = 256

[[workload]]
name = "vmalloc.random_size_alloc"

[[workload]]
name = "vmalloc.vm_map_ram"
pages = 16
"""

#: The machine and kernel fields a caller may override (``kpsim run``'s options).
OPTION_FIELDS = (
    "arch",
    "memory",
    "cpus",
    "poe",
    "linear_map",
    "seed",
    "hardened_pgtables",
    "allocator",
    "batching",
    "allow_unsafe_split",
    "series",
    "fail_page_alloc",
    "fail_pagetable_alloc",
    "fail_set_memory_pkey",
    "fail_split",
    "fail_pba_refill",
)

AUDIT_MODES = ("full", "end", "none")

#: ``progress(done, total, label)``: called as each step starts (``label`` names it),
#: and once with ``done == total`` when the job ends.
ProgressFn = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- inputs


def validate_workloads(scenario: Scenario) -> list[dict[str, Any]]:
    """Each workload's parameters, checked by the registry (defaults filled in)."""
    from kpsim.workloads.registry import WORKLOADS, validate_params

    out = []
    for spec in scenario.workloads:
        if spec.name not in WORKLOADS:
            known = ", ".join(sorted(WORKLOADS))
            raise spec.error("name", f"unknown workload {spec.name!r} (known: {known})")
        out.append(validate_params(spec.name, spec.params, spec=spec))
    return out


def _boot(
    cfg: MachineConfig, scenario: Scenario, overrides: Mapping[str, Any], **kw: Any
) -> Machine:
    """Boot ``cfg``; a configuration refused at boot is blamed on the scenario's line."""
    try:
        return Machine.boot(cfg, **kw)
    except ConfigError as err:
        for key in ("allocator", "linear_map", "hardened_pgtables", "poe"):
            if key in overrides:
                raise
            if scenario.section(key) is not None:
                raise scenario.error(key, err.problem, config=True) from None
        raise


def _attack_config(scenario: Scenario, cfg: MachineConfig) -> Any:
    """The validated ``[attack]`` campaign (``None`` without one); bad input is exit 2."""
    if scenario.attack is None:
        return None
    from kpsim.attack import validate_attack

    config = validate_attack(scenario.attack)
    if not 0 <= config.cpu < cfg.cpus:
        problem = f"attacker cpu {config.cpu}: the machine has {cfg.cpus} CPU(s)"
        raise scenario.attack.error("cpu", problem)
    return config


def workload_label(spec: WorkloadSpec) -> str:
    """``micromm.fork size=128M h=0``: a workload and its parameters as written."""
    shown = " ".join(f"{k}={_short(v)}" for k, v in spec.params.items())
    return f"{spec.name} {shown}".strip()


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- the run


class _Steps:
    """Counts the job's steps for a :data:`ProgressFn` (or for nobody)."""

    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(self.done, self.total, label)
        yield
        self.done += 1

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total, "done")


class _Auditor:
    """Audits machines as ``mode`` says and collects the violations."""

    def __init__(self, mode: str) -> None:
        if mode not in AUDIT_MODES:
            raise InputError(f"audit mode {mode!r}: use one of {', '.join(AUDIT_MODES)}")
        self.mode = mode
        self.machines = 0
        self.violations: list[dict[str, Any]] = []
        #: per machine with fault injection armed: what was injected, what it stopped
        self.faults: list[dict[str, Any]] = []

    def injected(self, m: Machine, where: str, stopped: str | None) -> None:
        fi = m.k.fault_inject
        if fi is not None:
            self.faults.append({"machine": where, "stopped": stopped, "sites": fi.as_dict()})

    def check(self, m: Machine, where: str) -> None:
        if self.mode == "none":
            return
        from kpsim.audit.invariants import audit

        self.machines += 1
        for v in audit(m):
            self.violations.append({"machine": where, **v.as_dict()})

    def watch(self, m: Machine, where: str) -> Any:
        """A context that, in ``full`` mode, checks every free while a workload runs."""
        if self.mode != "full":
            return nullcontext()
        from kpsim.audit.freewatch import FreeWatch

        return _Watched(FreeWatch(m), self, where)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"machines": self.machines, "violations": self.violations}
        if self.mode != "end":  # the default's document is unchanged (no "mode" key)
            doc["mode"] = self.mode
        if self.faults:
            doc["fault_inject"] = self.faults
        return doc


class _Watched:
    def __init__(self, watch: Any, auditor: _Auditor, where: str) -> None:
        self.watch, self.auditor, self.where = watch, auditor, where

    def __enter__(self) -> None:
        self.watch.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.watch.__exit__(*exc)
        for v in self.watch.violations:
            self.auditor.violations.append({"machine": f"{self.where}, while running",
                                            **v.as_dict()})  # fmt: skip


def _kunit(m: Machine, feature: bool) -> dict[str, Any]:
    from kpsim.kpkeys.kunit import run_suite

    if feature:
        return dict(run_suite(m))
    return {"suite": "kpkeys_hardened_pgtables", "run": False,
            "reason": "kpkeys_hardened_pgtables is off in this scenario",
            "cases": [], "passed": 0, "failed": 0, "skipped": 0}  # fmt: skip


def execute(
    scenario: Scenario,
    *,
    overrides: Mapping[str, Any] | None = None,
    costs_path: str | None = None,
    audit: str = "end",
    progress: ProgressFn | None = None,
    details: bool = False,
) -> dict[str, Any]:
    """Run ``scenario``; the whole result as one JSON-able document."""
    from kpsim.report.calibration import costs_for
    from kpsim.report.linear_map import linear_map_report

    over = dict(overrides or {})
    auditor = _Auditor(audit)
    cfg = machine_config(scenario, over)
    costs, costs_label = costs_for(costs_path, cfg.arch)
    params = validate_workloads(scenario)
    feature = cfg.hardened_pgtables
    variants: list[tuple[str, MachineConfig]] = [("on", cfg)] if feature else []
    variants.append(("off", dataclasses.replace(cfg, hardened_pgtables=False)))
    attack_cfg = _attack_config(scenario, cfg)
    total = 1 + len(scenario.workloads) * len(variants)
    steps = _Steps(total + (len(variants) if attack_cfg is not None else 0), progress)

    with steps.step("boot, KUnit kpkeys_hardened_pgtables, audit"):
        m = _boot(cfg, scenario, over, rodata_ro=False)
        kunit = _kunit(m, feature)
        m.mark_rodata_ro()
        auditor.check(m, "boot")
        at_boot = linear_map_report(m)
        dumps: dict[str, Any] = {"at_boot": linear_map_runs(m)} if details else {}
        del m
    after: dict[str, Any] = {}
    workloads = []
    for i, (spec, values) in enumerate(zip(scenario.workloads, params, strict=True)):
        entry: dict[str, Any] = {"index": i + 1, "name": spec.name, "label": workload_label(spec),
                                 "params": values}  # fmt: skip
        for variant, vcfg in variants:
            with steps.step(f"{workload_label(spec)} (feature {variant})"):
                counts, lm, extra = _run_one(vcfg, scenario, over, spec, values, auditor,
                                             f"#{i + 1} {spec.name} (feature {variant})",
                                             details)  # fmt: skip
            if variant == "on" and lm["mappings"] != at_boot["mappings"]:
                after[f"#{i + 1} {spec.name}"] = lm
            entry[variant] = _priced(counts, costs)
            if details and variant == "on":
                entry[variant]["linear_map"] = extra["summary"]
                dumps[f"#{i + 1} {workload_label(spec)}"] = extra["runs"]
        entry["overhead"] = (
            _overhead(entry, costs, cfg.batching, costs_label, cfg.arch) if feature else None
        )
        workloads.append(entry)
    attack = _attack(attack_cfg, variants, scenario, over, auditor, steps)
    steps.finish()

    status = 1 if kunit.get("failed") or auditor.violations or _attack_succeeded(attack) else 0
    doc = {
        "scenario": {
            "path": scenario.path,
            "seed": cfg.seed,  # the seed that ran (an override's, else the scenario's)
            "workloads": [{"name": s.name, "params": s.params} for s in scenario.workloads],
            "attack": scenario.attack.params if scenario.attack is not None else None,
        },
        "machine": cfg.as_dict(),
        "kunit": kunit,
        "audit": auditor.as_json(),
        "workloads": workloads,
        "linear_map": {"at_boot": at_boot, "after": after},
        "attack": attack,
        "costs": {
            "source": costs_path or ("calibration" if cfg.arch == "arm64" else "defaults"),
            "label": costs_label,
            "cycles": costs.as_dict(),
        },
        "status": status,
    }
    if details:
        doc["ptdump"] = dumps
    return doc


def _run_one(
    cfg: MachineConfig,
    scenario: Scenario,
    over: Mapping[str, Any],
    spec: WorkloadSpec,
    values: Mapping[str, Any],
    auditor: _Auditor,
    where: str,
    details: bool = False,
) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """One workload on a fresh machine: its counter delta, the final linear map, and
    with ``details`` its summary and ptdump runs (:func:`linear_map_summary`)."""
    from kpsim.report.linear_map import linear_map_report
    from kpsim.workloads.registry import run_workload

    m = _boot(cfg, scenario, over)
    stopped = None
    try:
        with auditor.watch(m, where):
            counts = dict(run_workload(m, spec.name, values, seed=cfg.seed))
    except OutOfMemory as err:
        if m.k.fault_inject is None:
            raise spec.error(None, _oom_problem(err)) from None
        # an injected failure ended the workload: the machine must still audit clean
        stopped = f"stopped by -ENOMEM: {err}"
        counts = dict(m.counters)
    except OSError as err:  # a system call's -ENOMEM (fork, mremap) under injection
        if m.k.fault_inject is None or err.errno != errno.ENOMEM:
            raise
        # an injected failure ended the workload: the machine must still audit clean
        stopped = f"stopped by -ENOMEM: {err}"
        counts = dict(m.counters)
    auditor.injected(m, where, stopped)
    auditor.check(m, where)
    lm = linear_map_report(m) if cfg.hardened_pgtables else {}
    extra: dict[str, Any] = {}
    if details and cfg.hardened_pgtables:
        runs = linear_map_runs(m)
        extra = {"summary": linear_map_summary(m, lm, runs), "runs": runs}
    return counts, lm, extra


def linear_map_runs(m: Machine) -> list[list[Any]]:
    """The linear map as merged ptdump runs: ``[offset, size, mapping, pkey]`` each, the
    offset from ``PAGE_OFFSET``, ``mapping`` the leaf size (``4K 64K 2M 32M 1G``);
    holes left out."""
    from kpsim.arch.arm64.memory import PAGE_OFFSET
    from kpsim.report.ptdump import Run, ptdump

    out = []
    for r in ptdump(m, "linear", pkey=True):
        if not isinstance(r, Run) or not r.prot:
            continue
        cont = "CON" in r.as_dict()["attrs"]
        size = {2: "1G", 3: "32M" if cont else "2M", 4: "64K" if cont else "4K"}[r.level]
        out.append([r.start - PAGE_OFFSET, r.end - r.start, size, r.pkey or 0])
    return out


def linear_map_summary(m: Machine, lm: Mapping[str, Any], runs: list[list[Any]]) -> dict[str, Any]:
    """What the linear map holds after a run: leaves, block share, keyed pages (mapped
    with a non-zero pkey), pages cached by the allocator, splits since boot, timeline."""
    c = m.k.counters
    kp = m.kpkeys
    return {
        "mappings": lm["mappings"],
        "block_pct": lm["block_pct"],
        "tables": lm["tables"],
        "keyed_pages": sum(size for _, size, _, pkey in runs if pkey) // 4096,
        "cached_pages": int(getattr(kp, "nr_cached", 0) or 0),
        "splits": {"pud": c["split_pud"], "pmd": c["split_pmd"], "cont": c["split_cont"]},
        "timeline": lm.get("timeline", []),
    }


def _oom_problem(err: BaseException) -> str:
    return (
        f"the simulated machine ran out of memory ({err}); "
        "use smaller sizes or more [machine] memory"
    )


def _priced(counts: Mapping[str, int], costs: Any) -> dict[str, Any]:
    from kpsim.report.cost import estimate

    e = estimate(counts, costs)
    return {"counters": dict(sorted(counts.items())), "cycles": e.total,
            "breakdown": dict(e.breakdown)}  # fmt: skip


def _overhead(
    entry: Mapping[str, Any], costs: Any, batching: bool, label: str, arch: str = "arm64"
) -> dict[str, Any] | None:
    """The estimated overhead of one workload entry (:func:`overhead_estimate`, whose
    cycle totals the entry already holds)."""
    on, off = entry["on"]["counters"], entry["off"]["counters"]
    ov = overhead_estimate(on, off, costs, batching, label, arch)
    if ov is not None:
        del ov["on_cycles"], ov["off_cycles"]
    return ov


def overhead_estimate(
    on: Mapping[str, int],
    off: Mapping[str, int],
    costs: Any,
    batching: bool,
    label: str,
    arch: str = "arm64",
) -> dict[str, Any] | None:
    """The estimated overhead of counters ``on`` over ``off``, its events and its
    interval (kpsim.report.calibration); None when the feature-off run costs nothing.
    What ``run``, ``sweep`` and ``replay --cost`` print.

    On another architecture priced with its priors (nothing there is fitted, so the
    arm64 calibration's held-out residuals say nothing of it) the interval is the
    priors' sensitivity range instead, as ``kpsim compare`` gives it
    (:func:`kpsim.engine.compare.prior_range`: hardware and software priors each ÷3
    and ×3), with ``level`` null: it is not a confidence interval."""
    from kpsim.report.calibration import overhead_interval
    from kpsim.report.cost import ZeroBaselineError, overhead_breakdown

    try:
        ov = overhead_breakdown(on, off, costs)
    except ZeroBaselineError:
        return None
    if arch != "arm64" and label.startswith("defaults"):
        from kpsim.engine.compare import prior_range

        iv = prior_range(on, off, arch) | {"level": None}
        iv["percent"] = round(ov.percent, 4)
    else:
        iv = overhead_interval(ov.percent, batching, label).as_json()
    return {"percent": ov.percent, "interval": iv, "contributions": dict(ov.contributions),
            "on_cycles": ov.on.total, "off_cycles": ov.off.total}  # fmt: skip


def _attack(
    attack_cfg: Any,
    variants: list[tuple[str, MachineConfig]],
    scenario: Scenario,
    over: Mapping[str, Any],
    auditor: _Auditor,
    steps: _Steps,
) -> dict[str, Any] | None:
    """The ``[attack]`` campaign on a fresh machine per variant (``None`` without one)."""
    if attack_cfg is None:
        return None
    from kpsim.attack import run_attack

    attack = {}
    for variant, vcfg in variants:
        with steps.step(f"attack campaign (feature {variant})"):
            m = _boot(vcfg, scenario, over)
            attack[variant] = run_attack(m, attack_cfg).as_json()
            auditor.check(m, f"attack (feature {variant})")
            del m
    return attack


def _attack_succeeded(attack: Mapping[str, Any] | None) -> bool:
    """An in-threat-model write landed with the feature on."""
    return bool(attack and attack.get("on", {}).get("exit_status"))


def split_details(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``details=True`` document as (the plain document ``kpsim run --json`` prints,
    the details: ``ptdump`` and each workload's ``linear_map``), for ``run --out``."""
    plain: dict[str, Any] = json.loads(json.dumps(doc))
    details: dict[str, Any] = {"ptdump": plain.pop("ptdump", {}), "linear_map": {}}
    for w in plain["workloads"]:
        lm = w.get("on", {}).pop("linear_map", None)
        if lm is not None:
            details["linear_map"][str(w["index"])] = lm
    return plain, details


def merge_details(doc: Mapping[str, Any], details: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_details`."""
    full: dict[str, Any] = json.loads(json.dumps(doc))
    full["ptdump"] = details.get("ptdump", {})
    for w in full["workloads"]:
        lm = details.get("linear_map", {}).get(str(w["index"]))
        if lm is not None and "on" in w:
            w["on"]["linear_map"] = lm
    return full
