"""Progress on the verbs that take long: boot reports its steps, replay the trace line
reached; the bar is drawn only on a terminal (captured output shows none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.machine import Machine
from kpsim.machine.config import MachineConfig
from kpsim.workloads.replay import PROGRESS_EVERY, replay_events
from kpsim.workloads.trace import read_trace

TRACE = Path(__file__).parent.parent / "data" / "traces" / "make-j2.trace"


def test_boot_reports_each_step_in_order() -> None:
    """Machine.boot(progress=...) is called as each step starts, then at the end."""
    calls: list[tuple[int, int, str]] = []
    Machine.boot(MachineConfig(memory="256M"), progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [0, 1, 2, 3] and {c[1] for c in calls} == {3}
    assert calls[0][2] == "boot: paging_init (linear map of 256M)"
    assert calls[-1][2] == "boot: done"


def test_replay_reports_the_line_reached() -> None:
    """replay_events(progress=...): lines never go back, end at the last line."""
    events = read_trace(TRACE)
    calls: list[tuple[int, int, str]] = []
    replay_events(
        Machine.boot(MachineConfig(memory="1G")), events, progress=lambda *a: calls.append(a)
    )
    lines = [c[0] for c in calls]
    assert len(calls) >= 2 and lines == sorted(lines)
    assert calls[-1] == (events[-1].line, events[-1].line, "replay")
    assert len(calls) <= len(events) // PROGRESS_EVERY + 2


@pytest.mark.parametrize(
    "argv",
    [
        ["boot", "--memory", "256M"],
        ["replay", "--memory", "1G", str(TRACE)],
        ["ptdump", "vmalloc", "--memory", "256M", "--workload", "vmalloc.fix_size_alloc:loops=2"],
    ],
)
def test_no_bar_when_not_a_terminal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Captured (not a terminal): no bar characters or step labels in the output."""
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "boot: paging_init" not in out + err and "━" not in out + err
