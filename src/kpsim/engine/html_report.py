"""``kpsim report``'s engine: result documents as one self-contained HTML page of plots.

Models nothing in Linux. Reads what the other jobs wrote (:func:`load_results`):

- a run directory (``kpsim run --out DIR``: ``run.json`` and ``details.json``);
- a sweep database (``kpsim sweep``: :class:`~kpsim.engine.results.Results`);
- a document (``kpsim run --json`` or ``kpsim replay --cost --json`` saved to a file);
- a ``kpsim compare --json`` document (arm64 POE against x86 PKS), drawn as its own
  two sections: the overhead per benchmark row and architecture with its interval
  (arm64 fitted; arm64 and x86 prior-only, with their sensitivity ranges), and the
  counted events each feature adds, side by side;

and draws with plotly (its JavaScript inlined once, so the file opens with no network):

1. the linear map's composition over time for each policy (linear map x allocator):
   the share of mapped bytes in each leaf size and the keyed pages, at boot, at each
   sample of the allocator's timeline (the PBA samples at every refill and shrink) and
   after each feature-on workload run;
2. the estimated overhead per workload with its interval (the calibration's interval,
   :func:`kpsim.report.calibration.overhead_interval`, carried by each document);
3. the events per workload: the priced events whose cycles differ most, on and off;
4. sweep comparisons (a database only): splits, memory held by the table cache and the
   overhead against memory size, one line per policy;
5. the linear map as a map: its merged ptdump runs along the address range, coloured
   by mapping size and by pkey.

A section the input cannot fill says so in the page (a replay carries no linear map).
Deterministic: the same input gives the same file.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpsim.engine.job import merge_details
from kpsim.errors import InputError

__all__ = ["Section", "Source", "build_report", "load_results", "write_report"]

SIZE_ORDER = ("1G", "32M", "2M", "64K", "4K")
SIZE_BYTES = {"1G": 1 << 30, "32M": 32 << 20, "2M": 2 << 20, "64K": 64 << 10, "4K": 4 << 10}
SIZE_COLOURS = {"1G": "#08306b", "32M": "#2171b5", "2M": "#6baed6", "64K": "#fdae6b",
                "4K": "#e6550d"}  # fmt: skip
PKEY_COLOURS = ("#bdbdbd", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
POLICY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_EVENTS = 12


@dataclass
class Source:
    """What a report is drawn from."""

    kind: str  # "run", "sweep", "replay" or "compare"
    path: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # main-job documents
    sweep: list[dict[str, Any]] = field(default_factory=list)  # workloads x runs rows
    replay: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None  # a kpsim compare --json document


@dataclass
class Section:
    title: str
    text: str
    figure: Any = None  # a plotly Figure, or None: the text says why there is none


# --------------------------------------------------------------------------- inputs


def load_results(path: str | Path) -> Source:
    """A run directory, a sweep database or a JSON document; bad input is exit 2."""
    p = Path(path)
    if p.is_dir():
        return _run_dir(p)
    if not p.is_file():
        raise InputError("no such file or directory", file=str(p))
    with p.open("rb") as f:
        head = f.read(16)
    if head[8:12] == b"DUCK":
        return _sweep_db(p)
    doc = _read_json(p)
    if isinstance(doc, dict) and "workloads" in doc and "machine" in doc:
        return Source("run", str(p), runs=[doc])
    if isinstance(doc, dict) and "trace" in doc and "counters" in doc:
        if not isinstance(doc.get("cost"), dict):
            raise InputError("a replay document without costs: use kpsim replay --cost --json",
                             file=str(p))  # fmt: skip
        return Source("replay", str(p), replay=doc)
    if isinstance(doc, dict) and "rows" in doc and "machines" in doc:
        return Source("compare", str(p), compare=_compare_doc(doc, p))
    raise InputError(
        "not a kpsim result: expected a run directory (kpsim run --out), a sweep database, "
        "or a kpsim run / kpsim replay --cost --json / kpsim compare --json document",
        file=str(p),
    )


_ARCHES = ("arm64", "x86")


def _compare_doc(doc: dict[str, Any], p: Path) -> dict[str, Any]:
    """A ``kpsim compare --json`` document, checked for what the page reads."""

    def bad(what: str) -> InputError:
        return InputError(f"not a kpsim compare document: {what}", file=str(p))

    rows = doc["rows"]
    if not isinstance(rows, list) or not rows:
        raise bad("'rows' must be a non-empty list")
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("row"), str):
            raise bad(f"row {n} has no 'row' name")
        for arch in _ARCHES:
            side = row.get(arch)
            if not isinstance(side, dict) or not isinstance(side.get("events"), list):
                raise bad(f"row {row['row']!r} has no {arch} events")
            figures = [side.get("prior")]  # always; "fitted" only on arm64 (else null)
            if side.get("fitted") is not None:
                figures.append(side["fitted"])
            for fig in figures:
                if not isinstance(fig, dict) or not all(
                    isinstance(fig.get(k), int | float) for k in ("percent", "lo", "hi")
                ):
                    raise bad(f"row {row['row']!r}: an {arch} figure lacks percent/lo/hi")
            for ev in side["events"]:
                if (
                    not isinstance(ev, dict)
                    or not isinstance(ev.get("group"), str)
                    or not all(isinstance(ev.get(k), int) for k in ("off", "on", "added"))
                ):
                    raise bad(f"row {row['row']!r}: an {arch} event group lacks off/on/added")
    return doc


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=str(p)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise InputError(f"not a JSON document ({err})", file=str(p), line=line) from None


def _run_dir(p: Path) -> Source:
    run = p / "run.json"
    if not run.is_file():
        raise InputError("not a run directory: no run.json (written by kpsim run --out)",
                         file=str(p))  # fmt: skip
    doc = _read_json(run)
    details = p / "details.json"
    if details.is_file():
        doc = merge_details(doc, _read_json(details))
    return Source("run", str(p), runs=[doc])


def _sweep_db(p: Path) -> Source:
    from kpsim.engine.results import Results

    with Results(p, read_only=True) as r:
        try:
            docs = r.documents()
            rows = r.table(
                "SELECT w.*, r.arch, r.memory_bytes, r.cpus, r.linear_map, r.allocator, r.seed, "
                "r.params FROM workloads w JOIN runs r USING (run_id) "
                "ORDER BY r.memory_bytes, w.run_id, w.workload_index"
            )
        except Exception as err:  # a DuckDB file that is not a sweep's
            raise InputError(f"not a kpsim sweep database ({err})", file=str(p)) from None
    if not docs:
        raise InputError("the sweep database holds no finished run", file=str(p))
    return Source("sweep", str(p), runs=docs, sweep=rows)


# --------------------------------------------------------------------------- helpers


def policy(machine: Mapping[str, Any]) -> str:
    """``pte map, minimal allocator``: how a run's linear map is managed (named
    ``x86: block map, pba allocator`` on x86, whose direct map it is)."""
    text = _arch_prefix(machine) + f"{machine['linear_map']} map, {machine['allocator']} allocator"
    if not machine.get("hardened_pgtables", True):
        text += " (feature off)"
    return text


def _arch_prefix(machine: Mapping[str, Any]) -> str:
    arch = machine.get("arch") or "arm64"
    return "" if arch == "arm64" else f"{arch}: "


def _by_policy(runs: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for doc in runs:
        out.setdefault(policy(doc["machine"]), []).append(doc)
    return dict(sorted(out.items()))


def _share(mappings: Mapping[str, int]) -> dict[str, float]:
    total = sum(SIZE_BYTES[k] * mappings.get(k, 0) for k in SIZE_ORDER)
    return {k: 100.0 * SIZE_BYTES[k] * mappings.get(k, 0) / total if total else 0.0
            for k in SIZE_ORDER}  # fmt: skip


def _keyed(runs: Sequence[Sequence[Any]] | None) -> int | None:
    if runs is None:
        return None
    return int(sum(size for _, size, _, pkey in runs if pkey)) // 4096


# --------------------------------------------------------------------------- 1. over time


def _timeline(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's linear-map states in order: boot, timeline samples, after each run."""
    lm = doc["linear_map"]
    dumps = doc.get("ptdump", {})
    states = [{"label": "boot", "mappings": lm["at_boot"]["mappings"],
               "keyed": _keyed(dumps.get("at_boot"))}]  # fmt: skip
    for w in doc["workloads"]:
        on = w.get("on")
        if on is None:
            continue
        tag = f"#{w['index']} {w['name']}"
        summary = on.get("linear_map")
        if summary is None:
            after = lm["after"].get(tag)
            mappings = after["mappings"] if after else lm["at_boot"]["mappings"]
            states.append({"label": f"after {tag}", "mappings": mappings, "keyed": None})
            continue
        for n, sample in enumerate(summary.get("timeline", [])):
            states.append({"label": f"{tag} sample {n + 1} ({sample['event']})",
                           "mappings": sample["leaves"], "keyed": None})  # fmt: skip
        states.append({"label": f"after {tag}", "mappings": summary["mappings"],
                       "keyed": summary["keyed_pages"]})  # fmt: skip
    return states


def composition_section(src: Source) -> Section:
    from plotly.subplots import make_subplots

    groups = _by_policy(d for d in src.runs if d["machine"].get("hardened_pgtables", True))
    title = "Linear-map composition over time, per policy"
    if not groups:
        return Section(title, _no_linear_map(src))
    names = list(groups)[:6]
    titles = [f"{n} ({_machine_text(groups[n][0]['machine'])})" for n in names]
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=titles, vertical_spacing=0.12,
                        specs=[[{"secondary_y": True}] for _ in names])  # fmt: skip
    for row, name in enumerate(names, start=1):
        states = _timeline(groups[name][0])
        x = list(range(len(states)))
        labels = [s["label"] for s in states]
        for size in SIZE_ORDER:
            y = [_share(s["mappings"])[size] for s in states]
            if any(y):
                fig.add_bar(x=x, y=y, name=f"{size} leaves", legendgroup=size,
                            marker_color=SIZE_COLOURS[size], showlegend=row == 1,
                            hovertext=labels, row=row, col=1)  # fmt: skip
        keyed = [(i, s["keyed"]) for i, s in enumerate(states) if s["keyed"] is not None]
        if keyed:
            fig.add_scatter(x=[i for i, _ in keyed], y=[k for _, k in keyed], name="keyed pages",
                            legendgroup="keyed", mode="lines+markers", showlegend=row == 1,
                            line={"color": "#d62728"}, row=row, col=1,
                            secondary_y=True)  # fmt: skip
        fig.update_xaxes(tickvals=x, ticktext=[_short(lab) for lab in labels], row=row, col=1)
        fig.update_yaxes(title_text="% of mapped bytes", range=[0, 100], row=row, col=1,
                         secondary_y=False)  # fmt: skip
        fig.update_yaxes(title_text="keyed pages", rangemode="tozero", row=row, col=1,
                         secondary_y=True)  # fmt: skip
    fig.update_layout(barmode="stack", height=330 * len(names), margin={"t": 40})
    text = (
        "Each policy's first run: the share of the linear map's mapped bytes in each leaf "
        "size, at boot, at every sample of the table allocator's timeline (the PBA samples "
        "at each refill and shrink; the minimal allocator keeps none), and after each "
        "feature-on workload run (each on a fresh machine; a run's samples are its "
        "allocator's timeline since that machine booted); the line is the pages mapped "
        "with a non-zero pkey."
    )
    return Section(title, text, fig)


def _short(label: str) -> str:
    return label if len(label) <= 28 else label[:27] + "…"


def _machine_text(m: Mapping[str, Any]) -> str:
    from kpsim.units import format_size

    return f"{format_size(int(m['memory_bytes']))} RAM, {m['cpus']} CPUs, seed {m['seed']}"


def _no_linear_map(src: Source) -> str:
    if src.kind == "replay":
        return "A replay document carries no linear-map data: nothing to draw here."
    return "No feature-on run in the input: the linear map is never keyed."


# --------------------------------------------------------------------------- 2. overhead


def _overheads(src: Source) -> list[dict[str, Any]]:
    """(workload, policy, percent, lo, hi) per feature-on workload run."""
    out = []
    if src.replay is not None:
        c = src.replay["cost"]
        if c.get("percent") is not None:
            iv = c.get("interval") or {}
            out.append({"workload": f"replay {Path(src.replay['trace']).name}", "policy": "replay",
                        "percent": c["percent"], "lo": iv.get("lo"), "hi": iv.get("hi"),
                        "basis": iv.get("basis", "")})  # fmt: skip
        return out
    for doc in src.runs:
        for w in doc["workloads"]:
            ov = w.get("overhead")
            if ov is None:
                continue
            iv = ov.get("interval") or {}
            out.append({"workload": w["label"], "policy": policy(doc["machine"]),
                        "percent": ov["percent"], "lo": iv.get("lo"), "hi": iv.get("hi"),
                        "basis": iv.get("basis", "")})  # fmt: skip
    return out


def overhead_section(src: Source) -> Section:
    import plotly.graph_objects as go

    title = "Estimated overhead per workload, with its interval"
    rows = _overheads(src)
    if not rows:
        return Section(title, "No workload has an overhead (the feature is off in every run).")
    fig = go.Figure()
    pols = sorted({r["policy"] for r in rows})
    for n, pol in enumerate(pols):
        mine = [r for r in rows if r["policy"] == pol]
        has_iv = all(r["lo"] is not None for r in mine)
        error = None
        if has_iv:
            error = {"type": "data", "symmetric": False,
                     "array": [r["hi"] - r["percent"] for r in mine],
                     "arrayminus": [r["percent"] - r["lo"] for r in mine]}  # fmt: skip
        fig.add_scatter(x=[r["workload"] for r in mine], y=[r["percent"] for r in mine],
                        mode="markers", name=pol, error_y=error,
                        marker={"size": 9, "color": POLICY_COLOURS[n % len(POLICY_COLOURS)]},
                        hovertext=[r["basis"] for r in mine])  # fmt: skip
    fig.update_layout(height=460, yaxis_title="overhead, % (feature on vs off)",
                      margin={"t": 30, "b": 140}, xaxis_tickangle=-30)  # fmt: skip
    bases = sorted({r["basis"] for r in rows if r["basis"]})
    text = (
        "One point per feature-on workload run (a sweep shows every run of each workload); "
        "the bars are the overhead's interval as the cost model gives it"
        + (f" ({'; '.join(bases)})" if bases else " (the input's documents carry none)")
        + ". The estimate counts events and prices them (docs/workloads.md)."
    )
    return Section(title, text, fig)


# --------------------------------------------------------------------------- 3. events


def _workload_counts(src: Source) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    if src.replay is not None:
        c = src.replay["cost"]
        name = f"replay {Path(src.replay['trace']).name}"
        return [(name, c.get("on_counters", {}), c.get("off_counters", {}))]
    doc = src.runs[0]
    return [(w["label"], w.get("on", w["off"])["counters"], w["off"]["counters"])
            for w in doc["workloads"]]  # fmt: skip


def _cost_table(src: Source) -> dict[str, float]:
    if src.runs:
        return dict(src.runs[0]["costs"]["cycles"])
    from kpsim.report.cost import default_costs

    return default_costs().as_dict()


def events_section(src: Source) -> Section:
    import plotly.graph_objects as go

    title = "Events per workload"
    rows = _workload_counts(src)
    cost = _cost_table(src)

    def weight(name: str) -> float:
        return max(abs(on.get(name, 0) - off.get(name, 0)) * cost.get(name, 0.0)
                   for _, on, off in rows)  # fmt: skip

    names = sorted({k for _, on, off in rows for k in (*on, *off) if cost.get(k)},
                   key=lambda k: (-weight(k), k))[:_EVENTS]  # fmt: skip
    if not names:
        return Section(title, "No priced event was counted.")
    fig = go.Figure()
    for label, on, off in rows:
        fig.add_bar(x=names, y=[on.get(k, 0) for k in names], name=_short(label),
                    customdata=[off.get(k, 0) for k in names],
                    hovertemplate="%{x}: %{y} on, %{customdata} off")  # fmt: skip
    fig.update_layout(barmode="group", height=480, yaxis_type="log",
                      yaxis_title="count with the feature on (log)",
                      margin={"t": 30, "b": 120})  # fmt: skip
    where = "the replay" if src.replay is not None else "the first run"
    text = (
        f"The {len(names)} priced events whose cycles differ most between the feature-on "
        f"and feature-off runs, counted in each workload of {where} (hover: the feature-off "
        "count)."
    )
    return Section(title, text, fig)


# --------------------------------------------------------------------------- 4. sweep


def sweep_section(src: Source) -> Section:
    from plotly.subplots import make_subplots

    title = "Sweep: splits, table-cache memory and overhead against memory size"
    rows = [r for r in src.sweep if r["cycles_on"] is not None]
    if src.kind != "sweep" or not rows:
        why = "not a sweep database" if src.kind != "sweep" else "no feature-on run"
        return Section(title, f"Nothing to compare ({why}).")
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "linear-map splits after the run", "memory held by the table cache (KiB)",
        "overhead (%)"))  # fmt: skip
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(policy(r | {"hardened_pgtables": True}), []).append(r)
    for n, (pol, mine) in enumerate(sorted(groups.items())):
        colour = POLICY_COLOURS[n % len(POLICY_COLOURS)]
        series = _mean_by_memory(mine)
        x = [gib for gib, _ in series]
        for col, key in enumerate(("splits", "cache_kib", "overhead_pct"), start=1):
            fig.add_scatter(x=x, y=[v[key] for _, v in series], name=pol, legendgroup=pol,
                            showlegend=col == 1, mode="lines+markers",
                            line={"color": colour}, row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="memory (GiB)", type="log")
    fig.update_layout(height=430, margin={"t": 50})
    text = (
        f"{len(rows)} feature-on workload runs of {len({r['run_id'] for r in rows})} sweep "
        "runs, averaged over the other parameters (CPUs, seeds, workloads) at each memory "
        "size: linear-map splits (PUD, PMD and contiguous-range splits since boot), the "
        "pages the table allocator caches keyed (the PBA's pool) and the overhead."
    )
    return Section(title, text, fig)


def _mean_by_memory(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, dict[str, float]]]:
    acc: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        acc.setdefault(int(r["memory_bytes"]), []).append(r)
    out = []
    for mem, rs in sorted(acc.items()):
        n = len(rs)
        out.append((mem / (1 << 30), {
            "splits": sum((r["split_pud"] or 0) + (r["split_pmd"] or 0) + (r["split_cont"] or 0)
                          for r in rs) / n,
            "cache_kib": sum(4 * (r["cached_pages"] or 0) for r in rs) / n,
            "overhead_pct": sum(r["overhead_pct"] or 0.0 for r in rs) / n,
        }))  # fmt: skip
    return out


# --------------------------------------------------------------------------- 5. ptdump


def _merged(runs: Sequence[Sequence[Any]], index: int) -> list[tuple[int, int, Any]]:
    """Adjacent runs with the same value in column ``index`` merged: (start, size, value)."""
    out: list[tuple[int, int, Any]] = []
    for start, size, *rest in runs:
        value = [start, size, *rest][index]
        if out and out[-1][2] == value and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + size, value)
        else:
            out.append((start, size, value))
    return out


def ptdump_section(src: Source) -> Section:
    import plotly.graph_objects as go

    title = "The linear map, as ptdump sees it"
    maps: list[tuple[str, str, list[list[Any]]]] = []
    for name, docs in _by_policy(src.runs).items():
        dumps = docs[0].get("ptdump") or {}
        if dumps:  # the last feature-on run's (keys "#N label"; a database sorts them)
            runs_after = sorted((k for k in dumps if k.startswith("#")),
                                key=lambda k: int(k[1:].split()[0]))  # fmt: skip
            last = runs_after[-1] if runs_after else "at_boot"
            state = "at boot" if last == "at_boot" else f"after {last}"
            maps.append((name, state, dumps[last]))
    if not maps:
        if src.kind == "replay":
            return Section(title, _no_linear_map(src))
        return Section(title, "The input has no ptdump runs (a run directory written before "
                       "details.json existed, or a run --json document).")  # fmt: skip
    fig = go.Figure()
    rows = []
    seen: set[str] = set()
    for label, _, runs in maps[:4]:
        for kind, index, colours in (("size", 2, SIZE_COLOURS), ("pkey", 3, None)):
            row = f"{label}: {kind}"
            rows.append(row)
            for value in sorted({r[index] for r in runs}, key=str):
                segs = [s for s in _merged(runs, index) if s[2] == value]
                name = f"{value} mapping" if kind == "size" else f"pkey {value}"
                colour = (colours[value] if colours else
                          PKEY_COLOURS[int(value) % len(PKEY_COLOURS)])  # fmt: skip
                fig.add_bar(y=[row] * len(segs), x=[s[1] / (1 << 20) for s in segs],
                            base=[s[0] / (1 << 20) for s in segs], orientation="h", name=name,
                            legendgroup=name, showlegend=name not in seen,
                            marker_color=colour, marker_line_width=0,
                            hovertemplate="+%{base:.3f} MiB, %{x:.3f} MiB: " + name)  # fmt: skip
                seen.add(name)
    fig.update_layout(barmode="overlay", height=140 + 70 * len(rows),
                      xaxis_title="offset from PAGE_OFFSET (MiB)",
                      yaxis={"categoryorder": "array", "categoryarray": rows[::-1]},
                      margin={"t": 30, "l": 300})  # fmt: skip
    text = (
        "The linear map's merged ptdump runs along its address range (holes left out), for "
        "each policy's first run after its last feature-on workload: one band coloured by "
        "mapping size (the leaf level, 64K and 32M for contiguous ranges), one by pkey (the "
        "descriptor's POIndex: 1 is KPKEYS_PKEY_PGTABLES). Zoom to see single pages. Drawn: "
        + "; ".join(
            f"{label} {state} ({_machine_text(_first(src, label))})" for label, state, _ in maps[:4]
        )
        + "."
    )
    return Section(title, text, fig)


def _first(src: Source, name: str) -> Mapping[str, Any]:
    machine: Mapping[str, Any] = _by_policy(src.runs)[name][0]["machine"]
    return machine


# --------------------------------------------------------------------------- the page


# --------------------------------------------------------------------------- compare


#: (the figure's name, the architecture, the document's key for it)
_COMPARE_FIGURES = (("arm64, fitted", "arm64", "fitted"), ("arm64, priors only", "arm64", "prior"),
                    ("x86, priors only", "x86", "prior"))  # fmt: skip
_ARCH_COLOURS = {"arm64": "#1f77b4", "x86": "#d62728"}


def compare_overhead_section(src: Source) -> Section:
    """The overhead per benchmark row: arm64 fitted (its held-out interval), arm64 and
    x86 priors only (their ÷3/×3 sensitivity ranges)."""
    import plotly.graph_objects as go

    assert src.compare is not None
    rows = src.compare["rows"]
    fig = go.Figure()
    for n, (name, arch, key) in enumerate(_COMPARE_FIGURES):
        got = [(r["row"], r[arch][key]) for r in rows if r[arch].get(key) is not None]
        if not got:
            continue
        fig.add_scatter(
            x=[row for row, _ in got], y=[f["percent"] for _, f in got], mode="markers",
            name=name, hovertext=[f.get("basis", "") for _, f in got],
            error_y={"type": "data", "symmetric": False,
                     "array": [f["hi"] - f["percent"] for _, f in got],
                     "arrayminus": [f["percent"] - f["lo"] for _, f in got]},
            marker={"size": 9, "color": _ARCH_COLOURS[arch],
                    "symbol": "circle" if key == "fitted" else "diamond-open"},
            offsetgroup=str(n),
        )  # fmt: skip
    fig.update_layout(height=460, yaxis_title="overhead, % (feature on vs off)",
                      scattermode="group", margin={"t": 30, "b": 140},
                      xaxis_tickangle=-30)  # fmt: skip
    machines = src.compare.get("machines", {})
    built = "; ".join(
        f"{a}: {m.get('linear_map', '?')} map, {m.get('allocator', '?')} allocator"
        for a, m in machines.items()
        if isinstance(m, dict)
    )
    text = (
        f"Each benchmark row of the {src.compare.get('table', '?')} table run on arm64 and "
        f"x86, feature off and on ({built}). Estimated, not counted: arm64 fitted uses the "
        "shipped calibration and its held-out interval; the prior-only figures use the "
        "cost priors alone, with the range the hardware and the software priors each "
        "÷3 and ×3 give (a sensitivity range, not a confidence interval). "
        + str(src.compare.get("note", ""))
    )
    return Section("arm64 POE against x86 PKS: estimated overhead per benchmark", text, fig)


def compare_events_section(src: Source) -> Section:
    """The counted events each feature adds, per row, one bar per architecture."""
    from plotly.subplots import make_subplots

    assert src.compare is not None
    rows = src.compare["rows"]
    groups: list[str] = []
    for r in rows:
        for arch in _ARCHES:
            groups.extend(g["group"] for g in r[arch]["events"] if g["group"] not in groups)
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=[r["row"] for r in rows],
                        vertical_spacing=min(0.3 / max(len(rows), 1), 0.08))  # fmt: skip
    for i, r in enumerate(rows, start=1):
        for arch in _ARCHES:
            added = {g["group"]: g["added"] for g in r[arch]["events"]}
            ys = [added.get(g, 0) for g in groups]
            fig.add_bar(x=groups, y=[y if y > 0 else None for y in ys], name=arch,
                        marker_color=_ARCH_COLOURS[arch], showlegend=i == 1,
                        legendgroup=arch, row=i, col=1, text=[str(y) for y in ys],
                        hovertemplate="%{x}: %{text} added<extra>" + arch + "</extra>")  # fmt: skip
    fig.update_layout(height=260 * len(rows) + 120, barmode="group",
                      margin={"t": 40, "b": 40})  # fmt: skip
    fig.update_yaxes(title_text="added (on - off)", type="log")
    text = (
        "Counted, exact: for each row, what turning the feature on adds on each "
        "architecture, grouped so that the two architectures' names for the same work "
        "line up (POR_EL1 writes and WRMSRs to IA32_PKRS are both pkey register writes; "
        "TLBIs and INVLPG/INVPCID both TLB invalidations). Log scale: a group the "
        "feature adds nothing to (or removes from) has no bar; the bar's label is the "
        "exact count."
    )
    return Section("arm64 POE against x86 PKS: events the feature adds", text, fig)


def build_report(src: Source) -> list[Section]:
    """Every section of the report, in order."""
    if src.kind == "compare":
        return [compare_overhead_section(src), compare_events_section(src)]
    return [composition_section(src), overhead_section(src), events_section(src),
            sweep_section(src), ptdump_section(src)]  # fmt: skip


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
p.note { color: #555; max-width: 60em; } .empty { color: #a60; }
"""


def render_html(src: Source, sections: Sequence[Section]) -> str:
    """The page: plotly.js inlined once, one div per figure (``kpsim-plot-N``)."""
    from plotly.offline import get_plotlyjs

    parts = []
    n = 0
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        cls = "note" if s.figure is not None else "note empty"
        parts.append(f'<p class="{cls}">{html.escape(s.text)}</p>')
        if s.figure is not None:
            n += 1
            parts.append(s.figure.to_html(full_html=False, include_plotlyjs=False,
                                          div_id=f"kpsim-plot-{n}",
                                          config={"responsive": True}))  # fmt: skip
    what = {"run": "a kpsim run", "sweep": "a kpsim sweep", "replay": "a kpsim replay",
            "compare": "kpsim compare"}[src.kind]  # fmt: skip
    if src.compare is not None:
        runs = f"{len(src.compare['rows'])} benchmark row(s)"
    else:
        runs = f"{len(src.runs)} run(s)" if src.runs else "one replay"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>kpsim report: {html.escape(Path(src.path).name)}</title>"
        f"<style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f'<h1>kpsim report</h1><p class="note">From {what}: '
        f"{html.escape(src.path)} ({runs}).</p>" + "\n".join(parts) + "</body></html>\n"
    )


def write_report(results: str | Path, out: str | Path) -> dict[str, Any]:
    """Read ``results``, write the page to ``out``; what was drawn."""
    src = load_results(results)
    sections = build_report(src)
    page = render_html(src, sections)
    try:
        Path(out).write_text(page, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write the report: {err.strerror or err}", file=str(out)) from None
    return {
        "source": {"kind": src.kind, "path": src.path, "runs": len(src.runs)},
        "output": str(out),
        "bytes": len(page.encode()),
        "sections": [
            {"title": s.title, "plot": s.figure is not None, "text": s.text} for s in sections
        ],
    }
