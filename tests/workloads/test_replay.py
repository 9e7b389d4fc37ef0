"""Trace replay: agreement with the live kernel's VmPTE at exit, and each replay rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpsim.errors import InputError
from kpsim.machine import boot
from kpsim.workloads.replay import Replayer, ReplayResult, replay_events
from kpsim.workloads.trace import memory_ops, parse_lines, read_trace
from kpsim.workloads.trace_record import read_arg_areas

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
WITH_VMPTE = sorted(p for p in TRACES.glob("*.trace") if Path(f"{p}.vmpte.json").exists())

BASE = 0x7F00_0000_0000  # 2 MiB aligned, 1 GiB aligned
PTE_SPAN = 1 << 21


def _areas(path: Path) -> dict[int, tuple[int, int]] | None:
    """The recorded argument areas (``FILE.args.json``), if the trace has them."""
    side = Path(f"{path}.args.json")
    return read_arg_areas(side) if side.exists() else None


def _replay(path: Path, *, lazy: bool = True, areas: bool = True) -> ReplayResult:
    return replay_events(boot(memory="256M", cpus=2), read_trace(path), file=str(path),
                         lazy=lazy, arg_areas=_areas(path) if areas else None)  # fmt: skip


def _agreement(path: Path, res: ReplayResult) -> tuple[int, int, list[str]]:
    """(agreeing, compared, disagreements) over the processes the sidecar read at exit."""
    live = {int(k): v for k, v in json.loads(Path(f"{path}.vmpte.json").read_text()).items()}
    ok, n, bad = 0, 0, []
    for p in res.processes:
        if p.pid not in live:
            continue
        assert p.exited, f"{path.name}: pid {p.pid} has a live reading but never exited"
        n += 1
        if p.pt_pages_at_exit == live[p.pid]:
            ok += 1
        else:
            bad.append(f"{p.pid} {p.comm}: model {p.pt_pages_at_exit} live {live[p.pid]}")
    return ok, n, bad


# --- real traces recorded on this host ----------------------------------------------


@pytest.mark.parametrize("path", WITH_VMPTE, ids=lambda p: p.name)
def test_stored_trace_replays_and_agrees_with_live_vmpte(path: Path) -> None:
    """Every process read at exit: replayed VmPTE at exit equals the live one (>= 90%)."""
    res = _replay(path)
    ok, n, bad = _agreement(path, res)
    assert n >= 1
    assert ok >= 0.9 * n, bad
    assert not res.refused, res.refused
    for p in res.processes:
        assert p.pt_pages_peak >= (p.pt_pages_at_exit or 0)


def test_agreement_over_all_stored_traces_is_exact() -> None:
    """Over every stored trace, all processes agree (measured: 44 of 44)."""
    ok = n = 0
    for path in WITH_VMPTE:
        a, b, _ = _agreement(path, _replay(path))
        ok, n = ok + a, n + b
    assert n >= 40 and ok == n


def test_exec_argument_strings_build_their_own_stack_tables() -> None:
    """``big-env.trace``: python3 execs ``true`` with 2.4 MB of environment, whose
    strings (copied by execve's copy_strings through get_user_pages: no traced fault)
    span two more 2 MiB stack spans than its traced stack faults. With the recorded
    argument area the replay builds those PTE tables and agrees with the live VmPTE (11);
    without it (the negative control) it is two tables short."""
    path = TRACES / "big-env.trace"
    live = json.loads(Path(f"{path}.vmpte.json").read_text())
    ((pid, want),) = live.items()
    ((arg_start, env_end),) = _areas(path).values()  # type: ignore[union-attr]
    assert env_end - arg_start > 2 << 20  # more than a PTE table's span of strings
    with_areas = _replay(path).processes[0]
    without = _replay(path, areas=False).processes[0]
    assert with_areas.pid == int(pid) and with_areas.pt_pages_at_exit == want == 11
    assert without.pt_pages_at_exit == want - 2


def test_exec_arg_pages_places_only_each_groups_last_exec() -> None:
    """The area read at exit is the last exec's: a group's earlier exec (sh running
    ``exec true``) gets nothing; the range ends above env_end by the filename, its
    NUL and the stack's top word."""
    from kpsim.workloads.replay import exec_arg_pages
    from kpsim.workloads.trace import ProcessExec

    def ex(line: int, name: str) -> ProcessExec:
        return ProcessExec(line, "sh", 7, 7, 0, 1.0 + line, name, 7)

    evs = [ex(3, "/bin/sh"), ex(9, "/bin/true")]
    got = exec_arg_pages(evs, {7: (0x7FFF_0000_1000, 0x7FFF_0000_2000), 8: (1, 2)})
    assert got == {9: (0x7FFF_0000_1000, 0x7FFF_0000_2000 + len("/bin/true") + 1 + 8)}


def test_without_lazy_vmas_the_exec_image_faults_are_refused() -> None:
    """Control: the kernel-made mappings are what the lazy VMAs supply."""
    path = TRACES / "true.trace"
    live = json.loads(Path(f"{path}.vmpte.json").read_text())
    res = _replay(path, lazy=False)
    assert res.refused and res.lazy_vmas == 0
    p = res.processes[0]
    assert p.pt_pages_at_exit is not None and p.pt_pages_at_exit < live[str(p.pid)]
    assert _replay(path).processes[0].pt_pages_at_exit == live[str(p.pid)]


def test_the_default_layout_replays_like_the_pid_tid_layout() -> None:
    """perf's default field set (tid only) gives the same per-process figures."""
    a = _replay(TRACES / "sh-ls-wc.trace").processes
    b = _replay(TRACES / "sh-ls-wc.default.trace").processes
    assert [(p.pid, p.pt_pages_at_exit, p.pt_pages_peak) for p in a] == [
        (p.pid, p.pt_pages_at_exit, p.pt_pages_peak) for p in b
    ]


# --- synthetic traces: one rule each -------------------------------------------------


def ln(comm: str, pid: int, tid: int, event: str, payload: str = "") -> str:
    return f"{comm:>16} {pid}/{tid} [000]  1000.000001: {event}: {payload}\n"


def flt(pid: int, tid: int, addr: int, code: int = 0x6, kernel: bool = False) -> str:
    ev = "exceptions:page_fault_kernel" if kernel else "exceptions:page_fault_user"
    ip = "elf_load" if kernel else "0x401000"
    return ln("p", pid, tid, ev, f"address={addr:#x} ip={ip} error_code={code:#x}")


def mmap(pid: int, tid: int, addr: int, length: int, flags: int = 0x22) -> list[str]:
    args = f"addr: 0x00000000, len: {length:#010x}, prot: 0x00000003, flags: {flags:#010x}, "
    args += "fd: 0xffffffff, off: 0x00000000"
    return [
        ln("p", pid, tid, "syscalls:sys_enter_mmap", args),
        ln("p", pid, tid, "syscalls:sys_exit_mmap", f"{addr:#x}"),
    ]


def munmap(pid: int, tid: int, addr: int, length: int) -> list[str]:
    return [
        ln("p", pid, tid, "syscalls:sys_enter_munmap", f"addr: {addr:#x}, len: {length:#x}"),
        ln("p", pid, tid, "syscalls:sys_exit_munmap", "0x0"),
    ]


def execve(pid: int, name: str = "/bin/p") -> str:
    return ln("p", pid, pid, "sched:sched_process_exec", f"filename={name} pid={pid} old_pid={pid}")


def fork(
    parent_pid: int, parent: int, child: int, syscall: str, flags: int | None = None
) -> list[str]:
    args = "" if flags is None else f"clone_flags: {flags:#x}, newsp: 0x0"
    return [
        ln("p", parent_pid, parent, f"syscalls:sys_enter_{syscall}", args),
        ln("p", parent_pid, parent, "sched:sched_process_fork",
           f"comm=p pid={parent} child_comm=p child_pid={child}"),
    ]  # fmt: skip


def exit_(pid: int, tid: int, dead: bool = True) -> str:
    d = "true" if dead else "false"
    return ln(
        "p", pid, tid, "sched:sched_process_exit", f"comm=p pid={tid} prio=120 group_dead={d}"
    )


def run(lines: list[str]) -> ReplayResult:
    return replay_events(boot(memory="256M", cpus=2), list(parse_lines(lines)))


def test_munmap_frees_the_tables_its_range_alone_used() -> None:
    """Two PTE tables + PMD + PUD at peak; munmap of the whole mapping frees all four."""
    lines = [
        execve(100),
        *mmap(100, 100, BASE, 2 * PTE_SPAN),
        flt(100, 100, BASE),
        flt(100, 100, BASE + PTE_SPAN + 0x10),
        *munmap(100, 100, BASE, 2 * PTE_SPAN),
        exit_(100, 100),
    ]
    p = run(lines).process(100)
    assert (p.pt_pages_peak, p.pt_pages_at_exit, p.exited) == (4, 0, True)


def test_threads_share_one_address_space() -> None:
    """A CLONE_THREAD child's faults land in its group's mm; one process is reported."""
    lines = [
        execve(100),
        *mmap(100, 100, BASE, 4 * PTE_SPAN),
        *fork(100, 100, 101, "clone", 0x003D0F00),
        flt(100, 101, BASE),
        flt(100, 101, BASE + 2 * PTE_SPAN),
        exit_(100, 101, dead=False),
        flt(100, 100, BASE + 3 * PTE_SPAN),
        exit_(100, 100),
    ]
    res = run(lines)
    assert [p.pid for p in res.processes] == [100]
    assert res.process(100).pt_pages_at_exit == 3 + 1 + 1


def test_fork_copies_written_memory_and_each_side_exits_alone() -> None:
    """fork: the child has the parent's tables for written anonymous memory."""
    lines = [
        execve(100),
        *mmap(100, 100, BASE, 2 * PTE_SPAN),
        flt(100, 100, BASE),
        *fork(100, 100, 200, "clone", 0x01200011),
        flt(200, 200, BASE + PTE_SPAN),
        exit_(200, 200),
        exit_(100, 100),
    ]
    res = run(lines)
    assert res.process(200).pt_pages_at_exit == 2 + 1 + 1
    assert res.process(100).pt_pages_at_exit == 1 + 1 + 1


def test_vfork_child_shares_the_parents_mm_until_it_execs() -> None:
    """Before exec the vfork child faults into its parent's mm; exec gives it its own."""
    far = BASE + (1 << 30)  # another PMD table
    lines = [
        execve(100),
        *mmap(100, 100, BASE, 2 * PTE_SPAN),
        *fork(100, 100, 300, "vfork"),
        flt(300, 300, BASE),  # in the parent's mm
        flt(300, 300, far, kernel=True),  # builds the new image
        execve(300, "/bin/true"),
        flt(300, 300, far + 0x1000),
        exit_(300, 300),
        exit_(100, 100),
    ]
    res = run(lines)
    assert res.process(300).pt_pages_at_exit == 1 + 1 + 1
    assert res.process(300).comm == "p" and res.process(300).execs == 1
    assert res.process(100).pt_pages_at_exit == 1 + 1 + 1  # the child's fault stayed


def test_exec_tears_down_the_old_image_and_keeps_the_new_images_faults() -> None:
    """Kernel-mode faults before the exec record belong to the new mm."""
    lines = [
        execve(100),
        *mmap(100, 100, BASE, PTE_SPAN),
        flt(100, 100, BASE),
        flt(100, 100, BASE + (1 << 39), kernel=True),  # new image: another PUD
        execve(100, "/bin/q"),
        exit_(100, 100),
    ]
    p = run(lines).process(100)
    assert (p.pt_pages_at_exit, p.pt_pages_peak, p.execs) == (3, 3, 2)


def test_a_process_running_before_the_trace_starts_empty_and_is_noted() -> None:
    lines = [flt(500, 500, BASE, 0x4), exit_(500, 500)]
    res = run(lines)
    p = res.process(500)
    assert p.pre_existing and not p.exec_first and p.pt_pages_at_exit == 3
    assert any("before the trace began" in n and "500" in n for n in res.notes)
    assert res.lazy_vmas == 1


def test_mprotect_on_a_mapping_the_trace_lacks_fills_it_exactly() -> None:
    """mprotect succeeded live, so the range was mapped: no refusal, read-only after."""
    lines = [
        execve(100),
        ln("p", 100, 100, "syscalls:sys_enter_mprotect",
           f"start: {BASE:#x}, len: 0x2000, prot: 0x00000001"),
        flt(100, 100, BASE, 0x4),
        flt(100, 100, BASE + 0x1000, 0x6),  # a write to a read-only page: SIGSEGV live too
        exit_(100, 100),
    ]  # fmt: skip
    res = run(lines)
    assert res.lazy_vmas == 1
    assert res.refused == {"fault the model cannot resolve (SIGSEGV)": 1}


def test_brk_grows_the_heap_from_the_break_the_kernel_reported() -> None:
    heap = 0x5555_5555_8000
    lines = [
        execve(100),
        ln("p", 100, 100, "syscalls:sys_enter_brk", "brk: 0x00000000"),
        ln("p", 100, 100, "syscalls:sys_exit_brk", f"{heap:#x}"),
        ln("p", 100, 100, "syscalls:sys_enter_brk", f"brk: {heap + 0x21000:#x}"),
        ln("p", 100, 100, "syscalls:sys_exit_brk", f"{heap + 0x21000:#x}"),
        flt(100, 100, heap + 0x10, 0x6),
        exit_(100, 100),
    ]
    res = run(lines)
    assert res.lazy_vmas == 0 and not res.refused
    assert res.process(100).pt_pages_at_exit == 3


def test_a_process_still_running_at_the_end_has_no_exit_figure() -> None:
    res = run([execve(100), flt(100, 100, BASE, 0x4)])
    p = res.process(100)
    assert p.pt_pages_at_exit is None and not p.exited and p.pt_pages_peak == 3
    assert any("had not exited" in n for n in res.notes)


def test_an_unreadable_line_is_an_input_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text(execve(100) + flt(100, 100, BASE) + "this is not perf output\n")
    with pytest.raises(InputError) as err:
        replay_events(boot(memory="256M"), read_trace(bad), file=str(bad))
    assert err.value.line == 3 and str(bad) in str(err.value)


def test_lost_events_are_noted_as_an_incomplete_trace() -> None:
    lines = [
        execve(100),
        f"{'p':>16} 100/100 [000]  1000.000002: PERF_RECORD_LOST lost 7\n",
        exit_(100, 100),
    ]
    res = run(lines)
    assert any("incomplete" in n for n in res.notes)


def test_a_fault_at_the_null_page_is_a_sigsegv_not_a_lazy_vma() -> None:
    """The JVM reads address 0 on purpose; no mapping or table may appear there."""
    lines = [execve(100), flt(100, 100, 0x0, 0x4), flt(100, 100, 0x10000, 0x4), exit_(100, 100)]
    res = run(lines)
    assert res.refused == {"fault the model cannot resolve (SIGSEGV)": 1}
    assert res.lazy_vmas == 1 and res.process(100).pt_pages_at_exit == 3


def test_a_run_of_faults_is_replayed_a_table_at_a_time_with_the_same_result() -> None:
    """Batching a memset-like run changes nothing the figures or counters show."""
    lines = [execve(100), *mmap(100, 100, BASE, 2 * PTE_SPAN)]
    lines += [flt(100, 100, BASE + i * 0x1000 + 0x10) for i in range(40)]
    lines += [flt(100, 100, BASE + PTE_SPAN + i * 0x3000, 0x4) for i in range(20)]
    lines.append(exit_(100, 100))
    events = list(parse_lines(lines))
    runs = []
    for batching in (True, False):
        m = boot(memory="256M", cpus=2)
        r = Replayer(m, batching=batching)
        r.run(memory_ops(events))
        res = r.result(len(events))
        c = m.counters
        keys = ("pgfault", "pte_write", "pgtable_alloc", "por_write", "page_alloc.alloc")
        runs.append((r.batched, res.process(100).pt_pages_peak, [c[k] for k in keys]))
    (batched, peak, counts), (single, peak1, counts1) = runs
    assert (batched, single) == (60, 0)
    assert peak == peak1 == 2 + 1 + 1 and counts == counts1 and counts[0] == 60
