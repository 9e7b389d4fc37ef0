"""kpsim report's page: what each input fills in, self-contained and deterministic, and
bad input reported as one line naming the file (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.engine.html_report import build_report, load_results

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """kpsim run --out on a block-mapped machine (the PBA's timeline has samples)."""
    d = tmp_path_factory.mktemp("run") / "out"
    argv = ["run", "--workload", "micromm.fork:size=2M", "--linear-map", "block",
            "--memory", "512M", "--out", str(d), "--json"]  # fmt: skip
    assert main(argv) == 0
    return d


def test_run_directory_report_has_the_linear_map_and_overheads(run_dir, tmp_path, capsys):
    """From a run directory: composition (boot, samples, after), overhead with its
    interval, events, ptdump bands; the sweep section says why it is empty."""
    capsys.readouterr()
    src = load_results(run_dir)
    assert src.kind == "run" and "ptdump" in src.runs[0]
    sections = {s.title.split(",")[0]: s for s in build_report(src)}
    comp = sections["Linear-map composition over time"].figure
    assert len(comp.data[0].x) >= 3  # boot, the PBA's samples, after the run
    ov = sections["Estimated overhead per workload"].figure.data[0]
    assert ov.error_y.array[0] > 0 and ov.error_y.arrayminus[0] > 0
    assert sections["Sweep: splits"].figure is None
    assert "not a sweep database" in sections["Sweep: splits"].text
    bands = sections["The linear map"].figure
    assert {t.name for t in bands.data} >= {"pkey 0", "pkey 1", "2M mapping"}


def test_page_is_self_contained_and_deterministic(run_dir, tmp_path, capsys):
    """The page loads no script from elsewhere; the same input gives the same bytes."""
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert main(["report", str(run_dir), "-o", str(a)]) == 0
    assert main(["report", str(run_dir), "-o", str(b), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{\n") :])
    assert [s["plot"] for s in doc["sections"]] == [True, True, True, False, True]
    page = a.read_text()
    assert page == b.read_text()
    assert external_resources(page) == []
    assert page.count('id="kpsim-plot-') == 4


def test_replay_document_report(tmp_path, capsys):
    """A replay --cost --json document: its overhead (with interval) and events; the
    linear-map sections say a replay carries none."""
    doc = tmp_path / "replay.json"
    trace = DATA / "traces" / "make-proj.trace"
    assert main(["replay", str(trace), "--cost", "--json"]) == 0
    doc.write_text(capsys.readouterr().out)
    sections = build_report(load_results(doc))
    plotted = [s.title.split(",")[0] for s in sections if s.figure is not None]
    assert plotted == ["Estimated overhead per workload", "Events per workload"]
    assert "A replay document carries no linear-map data" in sections[0].text


@pytest.fixture(scope="module")
def compare_doc(tmp_path_factory):
    """kpsim compare --json on two small rows (fork and vmalloc), saved to a file."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("compare") / "compare.json"
    out = io.StringIO()
    argv = ["compare", "--rows", "fork/h:0,fix_size_alloc/p:1,h:0", "--size", "4M",
            "--loops", "2", "--json"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    text = out.getvalue()
    path.write_text(text[text.index("{") :])
    return path


def test_compare_document_report(compare_doc, tmp_path, capsys):
    """A kpsim compare --json document: the overhead per row on both architectures with
    its interval (arm64 fitted and priors, x86 priors only) and the events each feature
    adds, one bar per architecture; both add pkey register writes, x86 as WRMSRs."""
    src = load_results(compare_doc)
    assert src.kind == "compare" and src.compare is not None
    ov, ev = build_report(src)
    assert ov.title.startswith("arm64 POE against x86 PKS: estimated overhead")
    names = [t.name for t in ov.figure.data]
    assert names == ["arm64, fitted", "arm64, priors only", "x86, priors only"]
    for t in ov.figure.data:
        assert list(t.x) == [r["row"] for r in src.compare["rows"]]
        assert min(t.error_y.array) >= 0 and min(t.error_y.arrayminus) >= 0
    x86 = ov.figure.data[2]
    assert max(x86.error_y.array) > 0  # the prior-only range is not a point
    assert "not a confidence interval" in ov.text
    bars = {t.name: t for t in ev.figure.data if t.showlegend}
    assert set(bars) == {"arm64", "x86"}
    k = list(bars["x86"].x).index("pkey register writes")
    assert bars["x86"].y[k] > 0 and bars["arm64"].y[k] > 0
    assert int(bars["x86"].text[k]) == bars["x86"].y[k]  # the label is the exact count
    assert main(["report", str(compare_doc), "-o", str(tmp_path / "c.html"), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{\n") :])
    assert doc["source"]["kind"] == "compare" and [s["plot"] for s in doc["sections"]] == [
        True,
        True,
    ]


def external_resources(page: str) -> list[str]:
    """src/href attributes of the page's tags (script bodies are not parsed as tags)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(f"{tag} {k}={v}" for k, v in attrs if k in ("src", "href") and v)

    P().feed(page)
    return found


BAD = [
    ("missing", None, "no such file or directory"),
    ("notkpsim.json", '{"hello": 1}', "not a kpsim result"),
    ("broken.json", '{\n  "workloads": [\n', "not a JSON document"),
    ("replay.json", '{"trace": "t", "counters": {}}', "without costs"),
    ("compare.json", '{"rows": [], "machines": {}}', "'rows' must be a non-empty list"),
    (
        "compare2.json",
        '{"rows": [{"row": "fork/h:0", "arm64": {"events": [], "prior": '
        '{"percent": 1, "lo": 0, "hi": 2}}}], "machines": {}}',
        "row 'fork/h:0' has no x86 events",
    ),
    (
        "compare3.json",
        '{"rows": [{"row": "r", "arm64": {"events": [], "prior": {"percent": 1}},'
        ' "x86": {"events": []}}], "machines": {}}',
        "an arm64 figure lacks percent/lo/hi",
    ),
]


@pytest.mark.parametrize(("name", "text", "needle"), BAD)
def test_bad_results_are_one_line_exit_2(tmp_path, capsys, name, text, needle):
    """Each bad RESULTS: exit 2, one stderr line naming the file, no report written."""
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"kpsim report: {path}"), err
    assert needle in err and not out.exists()


def test_directory_without_run_json_is_exit_2(tmp_path, capsys):
    """A directory that kpsim run --out did not write: exit 2, one line."""
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "no run.json" in capsys.readouterr().err
