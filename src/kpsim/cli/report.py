"""``kpsim report RESULTS -o report.html``: a self-contained HTML page of plots.

Parsing and printing only; the page is :mod:`kpsim.engine.html_report`'s. RESULTS is a
run directory (``kpsim run --out DIR``), a sweep database (``kpsim sweep``), or a saved
``kpsim run --json`` / ``kpsim replay --cost --json`` / ``kpsim compare --json``
document. Bad input is one line naming the file, exit status 2.
"""

from __future__ import annotations

import argparse

from kpsim.cli.common import add_json, check_writable, console, emit_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "report",
        help="an HTML page of plots from a run directory, a sweep database or a replay",
        description=(
            "Draw a self-contained HTML report (plotly, no network needed to open it): the "
            "linear map's composition over time per policy, the overhead per workload with "
            "its interval, events per workload, sweep comparisons, the linear map's ptdump "
            "as a map; from a kpsim compare document, arm64 against x86."
        ),
    )
    p.add_argument(
        "results",
        metavar="RESULTS",
        help="run directory, sweep database or JSON (kpsim run, replay --cost or compare)",
    )
    p.add_argument("-o", "--output", metavar="FILE", default="report.html",
                   help="the HTML file to write (default report.html)")  # fmt: skip
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kpsim.engine.html_report import write_report

    check_writable(args.output, "the report")
    doc = write_report(args.results, args.output)
    if args.json:
        emit_json(doc)
        return 0
    c = console()
    plots = sum(s["plot"] for s in doc["sections"])
    c.print(f"kpsim report  {doc['output']}: {plots} plots, {doc['bytes'] // 1024} KiB, "
            f"from {doc['source']['kind']} {doc['source']['path']}")  # fmt: skip
    for s in doc["sections"]:
        if not s["plot"]:
            c.print(f"  no plot for '{s['title']}': {s['text']}", style="dim")
    return 0
