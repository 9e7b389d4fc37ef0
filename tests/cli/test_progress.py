"""Progress on the verbs that take long: boot reports its steps, replay the trace line
reached; the bar is drawn only on a terminal (captured output shows none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.machine import Machine
from kpsim.machine.boot import BOOT_STEPS
from kpsim.machine.config import MachineConfig
from kpsim.workloads.replay import PROGRESS_EVERY, replay_events
from kpsim.workloads.trace import read_trace

TRACE = Path(__file__).parent.parent / "data" / "traces" / "make-j2.trace"


def test_boot_reports_each_step_and_each_gib_mapped() -> None:
    """Machine.boot(progress=...): the steps in order, never going back, one report per
    GiB of the linear map while paging_init runs, and the end at BOOT_STEPS."""
    calls: list[tuple[int, int, str]] = []
    Machine.boot(MachineConfig(memory="4G"), progress=lambda *a: calls.append(a))
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[0] == 0 and calls[-1] == (100, 100, "boot: done")
    assert {c[1] for c in calls} == {BOOT_STEPS}
    mapping = [c for c in calls if c[2] == "boot: paging_init (linear map of 4G)"]
    assert len(mapping) == 1 + 4  # the start, then one per GiB (the first one partial)
    assert mapping[-1][0] == 90
    labels = [c[2] for c in calls if c not in mapping]
    assert labels == ["boot: mem_init (buddy allocator, kpkeys init)", "boot: mark_rodata_ro",
                      "boot: done"]  # fmt: skip


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
