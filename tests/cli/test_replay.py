"""kpsim replay: the JSON document, the text table, --cost, and bad input exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpsim.cli.main import main

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_replay_json_has_processes_and_counters(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: processes with pid, comm, pt_pages_peak, pt_pages_at_exit; counters."""
    trace = TRACES / "sh-ls-wc.trace"
    rc, out, _ = _run(capsys, "replay", "--json", "--memory", "256M", str(trace))
    doc = json.loads(out)
    assert rc == 0
    live = json.loads(Path(f"{trace}.vmpte.json").read_text())
    got = {str(p["pid"]): p for p in doc["processes"]}
    assert set(got) == set(live)
    for pid, p in got.items():
        assert {"pid", "comm", "pt_pages_peak", "pt_pages_at_exit"} <= set(p)
        assert p["pt_pages_at_exit"] == live[pid]
    assert [p["comm"] for p in doc["processes"]] == ["sh", "ls", "wc"]
    assert isinstance(doc["counters"], dict) and doc["counters"]["pgtable_alloc"] > 0
    assert doc["ops"]["Fault"] == doc["replay_counters"]["pgfault"]
    assert "cost" not in doc


def test_replay_text_lists_each_process(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "replay", "--memory", "256M", str(TRACES / "make-j2.trace"))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("kpsim replay: ") and "4 processes" in lines[0]
    rows = [ln.split() for ln in lines[2:6]]
    assert [r[1] for r in rows] == ["make", "sh", "sh", "sh"]
    assert any("before the trace began" in ln for ln in lines)


def test_replay_cost_estimates_the_hardening_overhead(capsys: pytest.CaptureFixture[str]) -> None:
    """--cost replays with the feature off too: a positive overhead, decomposed."""
    trace = str(TRACES / "true.trace")
    rc, out, _ = _run(capsys, "replay", "--json", "--cost", "--memory", "256M", trace)
    cost = json.loads(out)["cost"]
    assert rc == 0
    assert cost["percent"] > 0 and cost["on_cycles"] > cost["off_cycles"]
    assert sum(cost["contributions"].values()) == pytest.approx(cost["percent"])
    assert cost["on_counters"]["por_write"] > cost["off_counters"].get("por_write", 0)
    assert cost["on_counters"]["page_fault"] == cost["off_counters"]["page_fault"]
    # the estimate carries its interval and names its costs (issue 13)
    iv = cost["interval"]
    assert iv["lo"] < cost["percent"] < iv["hi"] and cost["costs"].startswith("fitted")


def test_replay_cost_text_says_what_is_counted_and_what_estimated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = str(TRACES / "true.trace")
    rc, out, _ = _run(capsys, "replay", "--cost", "--memory", "256M", trace)
    assert rc == 0
    line = next(ln for ln in out.splitlines() if "hardening overhead" in ln)
    assert "estimated" in line and "exact" in line and "interval" in line and "[" in line
    assert "costs: fitted" in out


def test_replay_bad_line_exits_2_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = (TRACES / "true.trace").read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.trace"
    bad.write_text("".join(good[:5]) + "sh 1/1 [000] 1.0: exceptions:page_fault_user: oops\n")
    rc, out, err = _run(capsys, "replay", "--memory", "256M", str(bad))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and f"{bad}:6:" in err and "page fault" in err


def test_replay_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = _run(capsys, "replay", str(tmp_path / "nope.trace"))
    assert rc == 2 and err.count("\n") == 1 and "nope.trace" in err


def test_replay_bad_machine_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "replay", "--memory", "lots", str(TRACES / "true.trace"))
    assert rc == 2 and err.count("\n") == 1


def test_replay_compares_with_the_vmpte_sidecar(capsys: pytest.CaptureFixture[str]) -> None:
    """FILE.vmpte.json next to the trace: each process gets its live reading."""
    trace = TRACES / "make-proj.trace"
    rc, out, _ = _run(capsys, "replay", "--json", "--memory", "256M", str(trace))
    doc = json.loads(out)
    assert rc == 0
    live = json.loads(Path(f"{trace}.vmpte.json").read_text())
    assert doc["agreement"] == {"compared": len(live), "agree": len(live), "differ": []}
    assert all(p["live_vmpte_at_exit"] == live[str(p["pid"])] for p in doc["processes"])


def test_replay_reports_a_disagreement(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Negative control: a wrong live figure is reported as differing."""
    trace = TRACES / "true.trace"
    ((pid, pages),) = json.loads(Path(f"{trace}.vmpte.json").read_text()).items()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({pid: pages + 1}))
    rc, out, _ = _run(capsys, "replay", "--memory", "256M", "--vmpte", str(wrong), str(trace))
    assert rc == 1 and "agreement with the live VmPTE at exit: 0 of 1 process" in out


def test_replay_bad_vmpte_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    rc, _, err = _run(capsys, "replay", "--vmpte", str(bad), str(TRACES / "true.trace"))
    assert rc == 2 and err.count("\n") == 1 and str(bad) in err


def test_replay_on_x86_agrees_with_the_live_vmpte_and_prices_pkrs_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--arch x86``: the traces were recorded on an x86-64 host, and the x86 model's
    table pages at exit agree with its live VmPTE; ``--cost`` prices the IA32_PKRS
    writes with the x86 priors, its interval the priors' sensitivity range (no level:
    nothing on x86 is fitted)."""
    trace = TRACES / "sh-ls-wc.trace"
    argv = ("replay", "--json", "--cost", "--arch", "x86", "--memory", "256M", str(trace))
    rc, out, _ = _run(capsys, *argv)
    doc = json.loads(out)
    assert rc == 0 and doc["arch"] == "x86"
    assert doc["agreement"]["differ"] == [] and doc["agreement"]["compared"] == 3
    cost = doc["cost"]
    assert cost["on_counters"]["pkrs_write"] > 0 and "por_write" not in cost["on_counters"]
    assert cost["off_counters"].get("pkrs_write", 0) == 0  # negative control: feature off
    assert cost["contributions"]["pkrs_write"] > 0
    iv = cost["interval"]
    assert iv["level"] is None and "prior-only" in iv["basis"]
    assert iv["lo"] <= cost["percent"] <= iv["hi"]
    assert "x86 priors" in cost["costs"]


def test_replay_text_on_x86_names_its_events(capsys: pytest.CaptureFixture[str]) -> None:
    """The text counters line shows x86's INVLPGs and PKRS writes, not arm64's TLBIs and
    ISBs, and the cost line says its range is a sensitivity range."""
    argv = ("replay", "--cost", "--arch", "x86", "--memory", "256M", str(TRACES / "true.trace"))
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0
    counters = next(ln for ln in out.splitlines() if ln.strip().startswith("counters:"))
    assert "pkrs_write" in counters and "invlpg" in counters and "isb" not in counters
    assert "sensitivity range" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[1, 2]", "expected {"), ('{"7": [9, 8]}', "expected {"), ("{", "not JSON")],
)
def test_replay_bad_args_sidecar_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, problem: str
) -> None:
    """A malformed FILE.args.json: one line naming it, exit 2, nothing replayed."""
    trace = tmp_path / "t.trace"
    trace.write_text((TRACES / "true.trace").read_text())
    side = tmp_path / "t.trace.args.json"
    side.write_text(text)
    rc, out, err = _run(capsys, "replay", "--memory", "256M", str(trace))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"kpsim replay: {side}: {problem}")


def test_replay_reads_the_args_sidecar(capsys: pytest.CaptureFixture[str]) -> None:
    """``big-env.trace`` with its FILE.args.json: the replay names the sidecar it used
    and agrees with the live VmPTE (tests/workloads/test_replay.py has the control)."""
    trace = TRACES / "big-env.trace"
    rc, out, _ = _run(capsys, "replay", "--json", "--memory", "256M", str(trace))
    doc = json.loads(out)
    assert rc == 0 and doc["arg_areas"] == f"{trace}.args.json"
    assert doc["agreement"] == {"compared": 1, "agree": 1, "differ": []}
