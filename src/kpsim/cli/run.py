"""``kpsim run [SCENARIO]``: the main job (issue 7, item 5), parsing and printing only.

The job itself is :func:`kpsim.engine.job.execute` (KUnit, audit, every workload with
the feature on and off, the overhead, the linear map, the attack campaign); this verb
reads the scenario (with no argument the built-in
:data:`~kpsim.engine.job.DEFAULT_SCENARIO`, shipped as
``examples/scenarios/default.toml``), passes the command-line overrides, shows a
progress bar on a terminal, and prints one screen, or with ``--json`` the engine's
document; ``--out DIR`` also writes ``run.json`` (that document), ``run.txt`` (the
screen), ``details.json`` (the linear map after each run and its ptdump runs, for
``kpsim report``) and the ``scenario.toml`` that ran, every override applied. Exit
status 1 if a KUnit case fails or the audit finds a violation, or an in-threat-model
attack write lands with the feature on; 2 on bad input (checked before anything runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from kpsim.cli.common import add_json, console, emit_json, warn_unsafe
from kpsim.cli.machine_opts import add_machine_options
from kpsim.engine.job import (
    AUDIT_MODES,
    DEFAULT_SCENARIO,
    DEFAULT_SCENARIO_NAME,
    OPTION_FIELDS,
    execute,
    split_details,
)
from kpsim.errors import InputError, read_input_text
from kpsim.machine.scenario import Scenario, machine_config, parse_scenario
from kpsim.machine.scenario_text import parse_workload_option, scenario_toml

__all__ = ["DEFAULT_SCENARIO", "DEFAULT_SCENARIO_NAME", "execute", "register", "render", "run"]

# Machine options whose value was not given on the command line stay None, so that
# only explicit options override the scenario.
_OPTION_FIELDS = OPTION_FIELDS

COMMAND_LINE = "<command line>"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="the main job: KUnit, audit, workloads with the feature on and off, overhead",
        description=(
            "Run a scenario (default: the built-in one): KUnit suite, audit, every workload "
            "with kpkeys_hardened_pgtables on and off, the estimated overhead and the events "
            "behind it, the linear-map composition. Machine options given on the command "
            "line override the scenario's fields."
        ),
    )
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="scenario TOML file")
    p.add_argument(
        "--out", metavar="DIR", help="also write run.json, run.txt, details.json, scenario.toml"
    )
    p.add_argument(
        "--costs",
        metavar="FILE",
        help="TOML [costs] table overriding entries of the shipped calibration "
        "('defaults': the priors alone)",
    )
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME[:KEY=VALUE,...]",
        help="run this workload (repeatable; replaces the scenario's workloads; without "
        "SCENARIO, on the default machine), e.g. micromm.fork:size=1G,h=0",
    )
    p.add_argument(
        "--audit",
        choices=AUDIT_MODES,
        default="end",
        help="end: audit every machine after its run (default); full: also check every "
        "free while workloads run; none: no audit (large machines)",
    )
    p.add_argument(
        "--both-arches",
        action="store_true",
        help="run the scenario on arm64 (POE) and on x86 (PKS), each with its own defaults "
        "for what the scenario leaves open, and print the two side by side",
    )
    p.add_argument(
        "--list-workloads",
        action="store_true",
        help="list the built-in workloads and their parameters, then exit",
    )
    add_machine_options(p, scenario=True)
    p.set_defaults(**dict.fromkeys(_OPTION_FIELDS))
    add_json(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- inputs


def _load(args: argparse.Namespace) -> tuple[Scenario, str]:
    """The scenario to run and its text as given (``--workload`` options replace its
    workloads; with no file they run on the default machine configuration)."""
    options = [parse_workload_option(t) for t in args.workload or ()]
    if args.scenario is None:
        if options:
            s = Scenario({}, {}, options, None, 0, COMMAND_LINE)
            return s, scenario_toml(s)
        return parse_scenario(DEFAULT_SCENARIO, DEFAULT_SCENARIO_NAME), DEFAULT_SCENARIO
    path = Path(args.scenario)
    text = read_input_text(path, "scenario")
    s = parse_scenario(text, str(path))
    return (dataclasses.replace(s, workloads=options), text) if options else (s, text)


def _saved_scenario(args: argparse.Namespace, scenario: Scenario, text: str) -> str:
    """What ``--out`` saves as scenario.toml: the text as given if nothing on the command
    line changed it, else the scenario that ran, every override applied."""
    over = _overrides(args)
    if not over and not args.workload:
        return text
    shown = " ".join(_option_words(args))
    header = (
        f"The scenario `kpsim run` ran: {scenario.path} with {shown} applied.\n"
        "Re-running this file reproduces the run."
    )
    return scenario_toml(scenario, over, header=header)


def _option_words(args: argparse.Namespace) -> list[str]:
    words = [f"--workload {w}" for w in args.workload or ()]
    for key, value in _overrides(args).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            words.append(f"{flag} {value}")
    return words


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _OPTION_FIELDS if getattr(args, k, None) is not None}


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on a terminal (stdout a tty, not --json); no-op otherwise.
    Called by the engine as each step starts (:data:`kpsim.engine.job.ProgressFn`)."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=False),
            transient=True,
        )

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task(label, total=total)
        self._bar.update(self._task, description=label, completed=done, total=total)

    def __enter__(self) -> _Progress | None:
        if self._bar is None:
            return None
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- the screen


def _n(x: float) -> str:
    """A count or cycle figure to 3 significant digits: 950, 12.3k, 4.12M, 546M."""
    x = float(x)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            v = x / scale
            digits = 2 if abs(v) < 10 else 1 if abs(v) < 100 else 0
            return f"{v:.{digits}f}{unit}"
    return f"{x:.0f}"


def _pp(v: float) -> str:
    return f"{v:+.1f}" if abs(v) >= 0.1 else f"{v:+.2f}"


def _machine_line(cfg: Mapping[str, Any]) -> str:
    from kpsim.units import format_size

    arch = cfg.get("arch", "arm64")
    pkeys, lm = ("POE", "linear map") if arch == "arm64" else ("PKS", "direct map")
    feature = "on" if cfg["hardened_pgtables"] else "off"
    if cfg["hardened_pgtables"] and not cfg["poe"]:
        feature = f"inactive (no {pkeys})"
    return (
        f"{arch}, {format_size(int(cfg['memory_bytes']))} RAM, {cfg['cpus']} CPUs, "
        f"{pkeys} {'on' if cfg['poe'] else 'off'}; {lm} {cfg['linear_map']}\n"
        f"kernel     kpkeys_hardened_pgtables {feature}: {cfg['allocator']} allocator, batching "
        f"{'on' if cfg['batching'] else 'off'}, pt_reclaim {'on' if cfg['pt_reclaim'] else 'off'}, "
        f"series {cfg.get('series', 'enter-leave')}"
    )


def _kunit_line(k: Mapping[str, Any]) -> Text:
    if k.get("run") is False:
        return Text(f"not run: {k['reason']}", style="yellow")
    total = k["passed"] + k["failed"] + k["skipped"]
    text = f"{k['suite']}: {k['passed']}/{total} passed"
    if k["skipped"]:
        text += f", {k['skipped']} skipped"
    if k["failed"]:
        failed = [c["name"] for c in k["cases"] if c["status"] == "fail"]
        return Text(f"{text}, {k['failed']} FAILED: {', '.join(failed)}", style="bold red")
    if k["skipped"] == total:
        reason = k["cases"][0]["message"] if k["cases"] else ""
        return Text(f"{text}: {reason}", style="yellow")
    return Text(text, style="green")


def _audit_lines(a: Mapping[str, Any]) -> list[Text]:
    v = a["violations"]
    mode = a.get("mode", "end")
    if mode == "none":
        return [Text("not run (--audit none)", style="yellow")]
    where = f"{a['machines']} machines (after boot and after every run)"
    if mode == "full":
        where = f"{a['machines']} machines (after boot and after every run, every free watched)"
    if not v:
        return [Text(f"clean: 0 violations on {where}", style="green")]
    out = [Text(f"{len(v)} VIOLATION(S) on {where}", style="bold red")]
    for x in v[:5]:
        out.append(Text(f"  {x['machine']}: {x['invariant']}: {x['detail']}", style="red"))
    if len(v) > 5:
        out.append(Text(f"  ... {len(v) - 5} more (--json lists them all)", style="red"))
    return out


def _overhead_table(doc: Mapping[str, Any]) -> Table:
    feature = doc["machine"]["hardened_pgtables"]
    t = Table(
        title="estimated overhead of kpkeys_hardened_pgtables (counted events x cycles, on vs "
        "off; the counts are exact, the cycles and % estimates)"
        if feature
        else "estimated cost (kpkeys_hardened_pgtables off: no overhead to compare)",
        title_justify="left",
        title_style="bold",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    t.add_column("#", justify="right")
    t.add_column("workload")
    t.add_column("cycles off", justify="right")
    if feature:
        t.add_column("cycles on", justify="right")
        t.add_column("overhead", justify="right")
        t.add_column("interval", justify="right")
        t.add_column("top events (pp)")
    for w in doc["workloads"]:
        row = [str(w["index"]), w["label"], _n(w["off"]["cycles"])]
        if feature:
            ov = w["overhead"]
            row.append(_n(w["on"]["cycles"]))
            if ov is None:
                row += ["n/a", "", "the feature-off run costs 0 cycles"]
            else:
                top = list(ov["contributions"].items())[:3]
                row.append(f"{ov['percent']:+.2f}%")
                iv = ov.get("interval")
                row.append(f"[{iv['lo']:+.1f}, {iv['hi']:+.1f}]" if iv else "")
                row.append(", ".join(f"{k} {_pp(v)}" for k, v in top) or "none")
        t.add_row(*row)
    return t


_EVENT_ROWS = 14


def _events_table(doc: Mapping[str, Any]) -> _EventTables:
    feature = doc["machine"]["hardened_pgtables"]
    cost = doc["costs"]["cycles"]
    ws = doc["workloads"]
    names: set[str] = set()
    for w in ws:
        for variant in ("on", "off"):
            if variant in w:
                names |= {k for k, v in w[variant]["counters"].items() if v}
    unpriced = sorted(n for n in names if not cost.get(n))
    names -= set(unpriced)

    def weight(name: str) -> tuple[float, float, str]:
        """Largest cycle difference on-off, then largest cycles, over the workloads."""
        c = float(cost.get(name, 0.0))
        diff = total = 0.0
        for w in ws:
            on = w.get("on", w["off"])["counters"].get(name, 0)
            off = w["off"]["counters"].get(name, 0)
            diff = max(diff, abs(on - off) * c)
            total = max(total, on * c)
        return (-diff, -total, name)

    order = sorted(names, key=weight)
    hidden = order[_EVENT_ROWS:]
    order = order[:_EVENT_ROWS]
    title = (
        "events counted per workload with the feature on, +N/-N: more/fewer than with it off"
        if feature
        else "priced events counted per workload"
    )
    rows: list[list[str]] = []
    for name in order:
        cells = [name]
        for w in ws:
            off = w["off"]["counters"].get(name, 0)
            on = w["on"]["counters"].get(name, 0) if feature else off
            cells.append(
                _n(on) if on == off else f"{_n(on)} {'+' if on > off else '-'}{_n(abs(on - off))}"
            )
        rows.append(cells)
    caption = ""
    if unpriced or hidden:
        more = f"{len(hidden)} smaller priced counters and " if hidden else ""
        caption = f"{more}{len(unpriced)} counters that cost 0 cycles: see --json"
    return _EventTables(title, [f"#{w['index']}" for w in ws], rows, caption)


class _EventTables:
    """The events table, split into as many tables as the console's width needs (one
    column per workload; a cell never wraps)."""

    def __init__(self, title: str, heads: list[str], rows: list[list[str]], caption: str):
        self.title, self.heads, self.rows, self.caption = title, heads, rows, caption

    def __rich_console__(self, console: Any, options: Any) -> Any:
        first = max([len("event"), *(len(r[0]) for r in self.rows)]) + 1
        widths = [
            max([len(h), *(len(r[i + 1]) for r in self.rows)]) + 2 for i, h in enumerate(self.heads)
        ]
        chunks: list[list[int]] = [[]]
        used = first
        for i, wd in enumerate(widths):
            if chunks[-1] and used + wd > options.max_width:
                chunks.append([])
                used = first
            chunks[-1].append(i)
            used += wd
        for n, cols in enumerate(chunks):
            t = Table(
                title=self.title if n == 0 else None,
                title_justify="left",
                title_style="bold",
                box=None,
                pad_edge=False,
                header_style="bold",
            )
            t.add_column("event", no_wrap=True)
            for i in cols:
                t.add_column(self.heads[i], justify="right", no_wrap=True)
            for r in self.rows:
                t.add_row(r[0], *(r[i + 1] for i in cols))
            if n == len(chunks) - 1 and self.caption:
                t.caption = self.caption
                t.caption_justify = "left"
                t.caption_style = "dim"
            yield t


def _composition(lm: Mapping[str, Any]) -> str:
    from kpsim.units import format_size

    parts = [f"{k} x{v:,}" for k, v in lm["mappings"].items() if v]
    tables = ", ".join(f"{v} {k}" for k, v in lm["tables"].items() if v)
    return f"{format_size(lm['mapped_bytes'])} as {' + '.join(parts)} ({tables} tables)"


def _linear_map_lines(doc: Mapping[str, Any]) -> list[str]:
    lm = doc["linear_map"]
    out = [f"at boot ({lm['at_boot']['policy']}): {_composition(lm['at_boot'])}"]
    if not lm["after"]:
        out.append("after every feature-on workload run: unchanged")
    for where, rep in lm["after"].items():
        out.append(f"after {where}: {_composition(rep)}")
    return out


def _attack_side(r: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(landed, attempts) of the targeted page-table writes inside the threat model,
    then outside it. Random writes are counted apart (:func:`_attack_random`)."""
    inside = [c for c in r["targets"] if c["class"] != "random"]
    outside = [c for c in r["outside_threat_model"] if c["class"] != "random"]
    return (
        sum(c["landed"] for c in inside),
        sum(c["attempts"] for c in inside),
        sum(c["landed"] for c in outside),
        sum(c["attempts"] for c in outside),
    )


def _attack_random(r: Mapping[str, Any]) -> str:
    """The random writes: how many hit a live page table, and how many of those landed."""
    rnd = [c for c in r["targets"] if c["class"] == "random"]
    if not rnd:
        return ""
    n = sum(c["attempts"] for c in rnd)
    hit = sum(c.get("hit_page_tables", 0) for c in rnd)
    landed = sum(c["landed"] for c in rnd)
    return f"random writes: {hit}/{n} hit a page table, {landed} of those landed"


def _attack_lines(a: Mapping[str, Any] | None) -> list[Text]:
    if a is None:
        return []
    out: list[Text] = []
    for variant in ("on", "off"):
        if variant not in a:
            continue
        li, ni, lo, no = _attack_side(a[variant])
        text = (
            f"feature {variant}: {li}/{ni} targeted page-table writes landed"
            + (f" (+ {lo}/{no} outside the threat model)" if no else "")
            + (f", {len(a[variant]['skipped'])} skipped" if a[variant]["skipped"] else "")
        )
        style = ("bold red" if li else "green") if variant == "on" else "dim"
        out.append(Text(f"{'attack' if not out else '':<11}") + Text(text, style=style))
        rnd = _attack_random(a[variant])
        if rnd:
            out.append(Text(" " * 13) + Text(rnd, style=style))
        if variant == "off":
            out.append(Text(" " * 13) + Text("(the negative control: same campaign)", style=style))
    return out


def _level(doc: Mapping[str, Any]) -> str:
    """The level of the printed intervals (e.g. "95 %"), from the document."""
    for w in doc["workloads"]:
        iv = (w.get("overhead") or {}).get("interval")
        if iv and iv.get("level") is not None:
            return f"{round(100 * iv['level'])} %"
    return "the quantile"


def _interval_line(doc: Mapping[str, Any]) -> str:
    """What the printed intervals are: the calibration's held-out quantile, or (another
    architecture on its priors) the priors' sensitivity range."""
    for w in doc["workloads"]:
        iv = (w.get("overhead") or {}).get("interval")
        if iv and iv.get("level") is None:
            return f"interval: {iv.get('basis', 'prior-only')}"
    return (
        f"interval: the {_level(doc)} quantile of the calibration's "
        "leave-one-family-out held-out residuals "
        "(`kpsim reproduce --cv`); `kpsim run --costs defaults` prices with the priors"
    )


def render(doc: Mapping[str, Any]) -> RenderableType:
    """The one screen ``kpsim run`` prints, built from the JSON document only."""
    sc = doc["scenario"]
    head = Text.assemble(
        ("kpsim run", "bold"),
        f"  {sc['path']}, seed {sc['seed']}\nworkloads  {len(doc['workloads'])}, each on "
        "fresh machines"
        + (" with the feature on and off" if doc["machine"]["hardened_pgtables"] else ""),
    )
    parts: list[RenderableType] = [
        head,
        Text("machine    ") + Text(_machine_line(doc["machine"])),
        Text("KUnit      ") + _kunit_line(doc["kunit"]),
    ]
    audit_lines = _audit_lines(doc["audit"])
    parts.append(Text("audit      ") + audit_lines[0])
    parts += audit_lines[1:]
    parts += _attack_lines(doc["attack"])
    parts += [Text(""), _overhead_table(doc), Text(""), _events_table(doc), Text("")]
    lines = _linear_map_lines(doc)
    parts.append(Text("linear map ") + Text(lines[0]))
    parts += [Text("           " + x) for x in lines[1:]]
    src = doc["costs"].get("label") or doc["costs"]["source"]
    parts.append(
        Text(
            f"cycles per event: {src}; --json has every counter\n" + _interval_line(doc),
            style="dim",
        )
    )
    return Group(*parts)


def _text(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None, highlight=False, soft_wrap=True).print(
        render(doc)
    )
    return buf.getvalue()


def _write_out(
    out: str, doc: Mapping[str, Any], scenario_text: str, details: Mapping[str, Any]
) -> None:
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
        (d / "run.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (d / "details.json").write_text(json.dumps(details) + "\n", encoding="utf-8")
        (d / "run.txt").write_text(_text(doc), encoding="utf-8")
        (d / "scenario.toml").write_text(scenario_text, encoding="utf-8")
    except OSError as err:
        raise InputError(f"--out: cannot write: {err.strerror or err}", file=out) from None


def _list_workloads(as_json: bool) -> int:
    from kpsim.workloads.registry import WORKLOADS

    doc: dict[str, dict[str, Any]] = {
        name: {
            "doc": wd.doc,
            "params": [
                {"name": p.name, "kind": p.kind, "default": p.default, "choices": p.choices,
                 "min": p.min, "max": p.max, "doc": p.doc}
                for p in wd.params
            ],
        }
        for name, wd in WORKLOADS.items()
    }  # fmt: skip
    if as_json:
        emit_json(doc)
        return 0
    c = console()
    for name, wd in doc.items():
        c.print(f"[bold]{name}[/bold]: {wd['doc']}", markup=True)
        for p in wd["params"]:
            allowed = f" one of {', '.join(map(str, p['choices']))}" if p["choices"] else ""
            c.print(f"  {p['name']} ({p['kind']}{allowed}, default {p['default']}): {p['doc']}")
    return 0


ARCHES = ("arm64", "x86")


def _side_by_side(docs: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    """``--both-arches``: each architecture's machine, KUnit and audit line, then per
    workload the two overheads with their intervals and the events each added, grouped
    so that the two architectures' names for the same work line up
    (:data:`kpsim.engine.compare.GROUPS`)."""
    from kpsim.engine.compare import event_groups

    first = docs[ARCHES[0]]
    sc = first["scenario"]
    parts: list[RenderableType] = [
        Text.assemble(("kpsim run --both-arches", "bold"), f"  {sc['path']}, seed {sc['seed']}")
    ]
    for arch in ARCHES:
        d = docs[arch]
        parts += [
            Text(f"{arch} machine  ", style="bold") + Text(_machine_line(d["machine"])),
            Text("  KUnit    ") + _kunit_line(d["kunit"]),
            Text("  audit    ") + _audit_lines(d["audit"])[0],
        ]
    t = Table(
        title="estimated overhead per workload, arm64 POE vs x86 PKS (the counts are exact, "
        "the % estimates); events: feature on minus off",
        title_justify="left",
        title_style="bold",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    for col in ("#", "workload", "arm64", "interval", "x86", "range", "events added arm64 / x86"):
        t.add_column(col, justify="right" if col in ("#", "arm64", "x86") else "left")
    by_arch = {a: docs[a]["workloads"] for a in ARCHES}
    for wa, wx in zip(by_arch["arm64"], by_arch["x86"], strict=True):
        row = [str(wa["index"]), wa["label"]]
        for w in (wa, wx):
            ov = w.get("overhead")
            iv = (ov or {}).get("interval")
            row.append("n/a" if ov is None else f"{ov['percent']:+.2f}%")
            row.append(f"[{iv['lo']:+.1f}, {iv['hi']:+.1f}]" if iv else "")
        groups: dict[str, list[str]] = {}
        for arch, w in (("arm64", wa), ("x86", wx)):
            if "on" not in w:
                continue
            for g in event_groups(w["on"]["counters"], w["off"]["counters"]):
                if g["added"] and g["group"] != "guard entries":
                    groups.setdefault(g["group"], ["-", "-"])[arch == "x86"] = f"{g['added']:+d}"
        row.append("; ".join(f"{name} {a}/{x}" for name, (a, x) in list(groups.items())[:4]))
        t.add_row(*row)
    parts += [Text(""), t, Text("")]
    for arch in ARCHES:
        parts.append(Text(f"{arch}: " + _interval_line(docs[arch]), style="dim"))
    return Group(*parts)


def _run_both(args: argparse.Namespace, scenario: Scenario, text: str) -> int:
    """``--both-arches``: the scenario once per architecture, the documents side by side
    (``--json``: ``{"arches": {"arm64": doc, "x86": doc}, "status": worst}``)."""
    if args.arch is not None:
        raise InputError("--both-arches runs arm64 and x86: it takes no --arch")
    over = _overrides(args)
    for arch in ARCHES:
        warn_unsafe(machine_config(scenario, over | {"arch": arch}), "run")
    docs = {}
    for arch in ARCHES:
        out = None if not args.out else str(Path(args.out) / arch)
        docs[arch] = _job(args, scenario, text, over | {"arch": arch}, out)
    status = max(int(d["status"]) for d in docs.values())
    _show(args, {"arches": docs, "status": status}, lambda: _side_by_side(docs), 150)
    return status


def _job(
    args: argparse.Namespace,
    scenario: Scenario,
    text: str,
    over: dict[str, Any],
    out: str | None,
) -> dict[str, Any]:
    """One run of the engine with a progress bar on a terminal; with ``out``, its files
    written there (``--out``) and the details split off the returned document."""
    tty = sys.stdout.isatty() and not args.json
    with _Progress(tty) as bar:
        doc = execute(scenario, overrides=over, costs_path=args.costs, audit=args.audit,
                      progress=bar, details=bool(out))  # fmt: skip
    if out:
        doc, details = split_details(doc)
        _write_out(out, doc, _saved_scenario(args, scenario, text), details)
    return doc


def _show(
    args: argparse.Namespace, doc: Any, screen: Callable[[], RenderableType], width: int
) -> None:
    """``doc`` as JSON with ``--json``, else ``screen()`` (``width`` columns when piped:
    wide enough for the tables; a terminal keeps its width)."""
    if args.json:
        emit_json(doc)
        return
    c = console()
    if not c.is_terminal:
        c.width = width
    c.print(screen())


def run(args: argparse.Namespace) -> int:
    if args.list_workloads:
        return _list_workloads(args.json)
    scenario, text = _load(args)
    if args.out:  # refuse an unwritable --out before the run, not after it
        try:
            if Path(args.out).exists() and not Path(args.out).is_dir():
                raise InputError("--out: not a directory", file=args.out)
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--out: cannot write: {err.strerror or err}", file=args.out) from None
    if args.both_arches:
        return _run_both(args, scenario, text)
    warn_unsafe(machine_config(scenario, _overrides(args)), "run")
    doc = _job(args, scenario, text, _overrides(args), args.out)
    _show(args, doc, lambda: render(doc), 130)
    return int(doc["status"])
