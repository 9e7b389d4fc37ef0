"""``kpsim replay`` reads any ``perf script -F`` field set that carries a thread id, the
event and its fields (real perf output of one recording, tests/data/traces/fieldsets),
and names the missing field otherwise (one line, exit status 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.workloads.trace import memory_ops, read_trace

SETS = Path(__file__).parent.parent / "data" / "traces" / "fieldsets"
READABLE = [
    "tid_event_trace",
    "pid_tid_event_trace",
    "comm_tid_time_event_trace",
    "comm_pid_tid_cpu_event_trace",
    "tid_cpu_time_event_trace_ip_sym_dso",
]
MISSING = {
    "comm_cpu_time_event_trace": "lacks 'tid'",
    "comm_pid_tid_cpu_time_trace": "lacks 'event'",
    "comm_pid_tid_cpu_time_event": "lacks 'trace'",
}


def _ops(name: str) -> list[object]:
    """The resolved memory operations, comm left out (some sets do not print it)."""
    return [
        dataclasses.replace(op, comm="") for op in memory_ops(read_trace(SETS / f"{name}.trace"))
    ]


@pytest.mark.parametrize("name", READABLE)
def test_a_field_set_with_what_replay_needs_gives_the_same_operations(name: str) -> None:
    """Every operation (line, thread group, thread, addresses, flags) equals the one
    read from the full field set; the tid-only sets infer the same thread groups."""
    full = _ops("full")
    assert len(full) > 100
    assert _ops(name) == full


@pytest.mark.parametrize("name", READABLE)
def test_replay_of_each_field_set_matches_the_full_one(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """kpsim replay --json: the same processes with the same page-table pages."""

    def pages(file: str) -> list[tuple[int, int, int]]:
        assert main(["replay", "--memory", "1G", "--json", str(SETS / file)]) == 0
        doc = json.loads(capsys.readouterr().out)
        return [(p["pid"], p["pt_pages_peak"], p["pt_pages_at_exit"]) for p in doc["processes"]]

    full = pages("full.trace")
    assert len(full) == 3  # sh and the two sides of the pipe
    assert pages(f"{name}.trace") == full


@pytest.mark.parametrize(("name", "problem"), sorted(MISSING.items()))
def test_a_missing_field_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str], name: str, problem: str
) -> None:
    """Without a thread id, the event or its fields: file:1: the missing field, exit 2."""
    path = SETS / f"{name}.trace"
    assert main(["replay", "--memory", "1G", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"kpsim replay: {path}:1: ") and problem in err
