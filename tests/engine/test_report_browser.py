"""kpsim report in a real browser: Debian's headless chromium opens the page with no
network, logs no console message, renders every plot, and leaves a screenshot in the
test's tmp directory (CI keeps it as an artifact)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kpsim.cli.main import main

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
]  # fmt: skip

GRID = """\
audit = "none"

[base.machine]
cpus = 1

[grid]
"machine.memory" = ["256M", "512M"]
"kernel.linear_map" = ["pte", "block"]
workload = ["micromm.fork:size=4M,h=0", "micromm.munmap:size=4M,h=0"]
"""


def chromium() -> str:
    """The chromium binary; a missing one fails the test (make installs it) unless the
    user opts out explicitly with KPSIM_NO_BROWSER=1 (never set in CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("KPSIM_NO_BROWSER") == "1":
        pytest.skip("KPSIM_NO_BROWSER=1: the browser test was turned off by hand")
    pytest.fail(
        "chromium is not installed: `make test` installs it as root "
        "(apt-get install chromium), or set KPSIM_NO_BROWSER=1 to skip by hand"
    )


def browse(page: Path, tmp: Path, *extra: str) -> tuple[str, list[str]]:
    """Open ``page`` in a fresh profile: (the DOM after its scripts ran, console lines)."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


class Plots(HTMLParser):
    """Per plot div (``kpsim-plot-N``): its SVG roots, and the marks drawn inside its
    traces (``path`` elements with a real outline under a ``g.trace``)."""

    VOID = ("br", "img", "meta", "input", "link", "hr")

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict[str, int]] = {}
        self._stack: list[tuple[str | None, bool]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        plot, in_trace = self._stack[-1] if self._stack else (None, False)
        if tag == "div" and (a.get("id") or "").startswith("kpsim-plot-"):
            plot = a["id"]
            self.plots[plot] = {"svg": 0, "marks": 0}
        cls = (a.get("class") or "").split()
        if plot is not None:
            if tag == "svg" and "main-svg" in cls:
                self.plots[plot]["svg"] += 1
            if tag == "g" and "trace" in cls:
                in_trace = True
            if tag == "path" and in_trace and (a.get("d") or "M0,0Z") not in ("M0,0Z", "M0,0"):
                self.plots[plot]["marks"] += 1
        if tag not in self.VOID:
            self._stack.append((plot, in_trace))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self._stack:
            self._stack.pop()

    def handle_endtag(self, tag):
        if tag not in self.VOID and self._stack:
            self._stack.pop()


def rendered(dom: str) -> dict[str, dict[str, int]]:
    p = Plots()
    p.feed(dom)
    return p.plots


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    """A report of an 8-run sweep (two memory sizes, both linear maps, two workloads)."""
    tmp = tmp_path_factory.mktemp("report")
    grid = tmp / "g.toml"
    grid.write_text(GRID)
    assert main(["sweep", str(grid), "--jobs", "2"]) == 0
    out = tmp / "report.html"
    assert main(["report", str(tmp / "g.duckdb"), "-o", str(out)]) == 0
    return out


def test_report_renders_every_plot_with_no_console_message(sweep_report, tmp_path):
    """Five plots, each with an SVG and drawn marks; not one console line; a screenshot."""
    dom, console = browse(sweep_report, tmp_path, "--dump-dom")
    assert console == []
    plots = rendered(dom)
    assert sorted(plots) == [f"kpsim-plot-{n}" for n in range(1, 6)]
    for name, seen in plots.items():
        assert seen["svg"] >= 1 and seen["marks"] > 0, (name, seen)
    shot = tmp_path / "report.png"
    browse(sweep_report, tmp_path, f"--screenshot={shot}", "--window-size=1300,4200")
    assert shot.stat().st_size > 20_000  # a real image of the page, kept for CI


def test_checks_catch_a_broken_page(sweep_report, tmp_path):
    """Negative controls: without plotly.js no plot renders, and a console error is seen."""
    page = sweep_report.read_text()
    js = re.search(r"<script>(.*?)</script>", page, re.S)
    assert js is not None and "plotly" in js.group(1)[:2000].lower()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace(js.group(0), "<script>console.error('no plotly')</script>", 1))
    dom, console = browse(broken, tmp_path, "--dump-dom")
    assert any("no plotly" in line for line in console)
    assert all(p["svg"] == 0 for p in rendered(dom).values())
    assert any("Plotly is not defined" in line for line in console)


def test_run_directory_and_replay_reports_open_too(tmp_path, capsys):
    """A run directory (kpsim run --out) and a replay document give pages that render."""
    run = tmp_path / "run"
    argv = ["run", "--workload", "micromm.fork:size=2M", "--memory", "256M", "--out", str(run)]
    assert main(argv) == 0
    out = tmp_path / "run.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    dom, console = browse(out, tmp_path, "--dump-dom")
    plots = rendered(dom)
    assert console == [] and len(plots) == 4  # no sweep comparison for a single run
    assert all(p["svg"] and p["marks"] for p in plots.values()), plots
    capsys.readouterr()


def test_compare_report_opens_too(tmp_path, capsys):
    """A kpsim compare --json document gives a page whose two plots render."""
    doc = tmp_path / "compare.json"
    argv = ["compare", "--rows", "fork/h:0", "--size", "4M", "--loops", "2", "--json"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    doc.write_text(text[text.index("{") :])
    out = tmp_path / "compare.html"
    assert main(["report", str(doc), "-o", str(out)]) == 0
    dom, console = browse(out, tmp_path, "--dump-dom")
    plots = rendered(dom)
    assert console == [] and sorted(plots) == ["kpsim-plot-1", "kpsim-plot-2"]
    assert all(p["svg"] and p["marks"] for p in plots.values()), plots
