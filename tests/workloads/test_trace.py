"""perf script trace parsing, syscall pairing, clone/exec resolution, and kpsim record."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from kpsim.cli.main import main
from kpsim.errors import InputError
from kpsim.workloads import trace_record
from kpsim.workloads.trace import (
    CLONE_THREAD,
    INFERRED_FORK_FLAGS,
    INFERRED_SPAWN_FLAGS,
    INFERRED_THREAD_FLAGS,
    VFORK_FLAGS,
    Brk,
    Clone,
    Exec,
    Exit,
    Fault,
    Lost,
    Madvise,
    MemOp,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    Other,
    PageFault,
    ProcessExec,
    ProcessExit,
    ProcessFork,
    Skipped,
    SysEnter,
    SysExit,
    Vfork,
    memory_ops,
    parse_lines,
    read_trace,
)

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
ALL_TRACES = sorted(TRACES.glob("*.trace"))


def raw(comm: str, pid: int | None, tid: int, text: str) -> str:
    """One perf script line; ``pid=None`` gives perf's default (tid-only) layout."""
    who = f"{tid}" if pid is None else f"{pid}/{tid}"
    return f"{comm:>16} {who:>11} [000]  1000.000001: {text}\n"


def ln(comm: str, pid: int | None, tid: int, event: str, payload: str = "") -> str:
    """A tracepoint line: ``event: payload``."""
    return raw(comm, pid, tid, f"{event}: {payload}")


def fault(pid: int | None, tid: int, addr: int, code: int, kernel: bool = False) -> str:
    ev = "exceptions:page_fault_kernel" if kernel else "exceptions:page_fault_user"
    ip = "elf_load" if kernel else "0x401000"
    return ln("p", pid, tid, ev, f"address={addr:#x} ip={ip} error_code={code:#x}")


def mmap_pair(pid: int | None, tid: int, length: int, ret: int) -> list[str]:
    args = f"addr: 0x00000000, len: {length:#010x}, prot: 0x00000003, flags: 0x00000022, "
    args += "fd: 0xffffffff, off: 0x00000000"
    return [
        ln("p", pid, tid, "syscalls:sys_enter_mmap", args),
        ln("p", pid, tid, "syscalls:sys_exit_mmap", f"{ret:#x}"),
    ]


def ops_of(lines: Iterable[str]) -> list[MemOp]:
    return list(memory_ops(list(parse_lines(lines))))


def without_faults(ops: list[MemOp]) -> list[MemOp]:
    return [o for o in ops if not isinstance(o, Fault)]


# --- parsing the committed real traces ----------------------------------------------


@pytest.mark.parametrize("path", ALL_TRACES, ids=lambda p: p.name)
def test_committed_trace_parses_one_record_per_line(path: Path) -> None:
    """Every line of each recorded trace becomes exactly one record, numbered from 1."""
    events = read_trace(path)
    assert [e.line for e in events] == list(range(1, len(path.read_text().splitlines()) + 1))


@pytest.mark.parametrize("path", ALL_TRACES, ids=lambda p: p.name)
def test_committed_trace_resolves_without_skips(path: Path) -> None:
    """memory_ops resolves every record of a recorded trace: nothing is skipped."""
    skipped = [o for o in memory_ops(read_trace(path)) if isinstance(o, Skipped)]
    assert skipped == []


def test_committed_traces_hold_every_recorded_event_kind() -> None:
    """The real traces contain each tracepoint kpsim record enables that these programs hit."""
    seen: set[str] = set()
    for path in ALL_TRACES:
        for e in read_trace(path):
            if isinstance(e, SysEnter):
                seen.add(f"enter_{e.name}")
            elif isinstance(e, SysExit):
                seen.add(f"exit_{e.name}")
            elif isinstance(e, PageFault):
                seen.add("fault_kernel" if e.kernel else "fault_user")
            else:
                seen.add(type(e).__name__)
    wanted = {"ProcessFork", "ProcessExec", "ProcessExit", "fault_user", "fault_kernel"}
    wanted |= {f"enter_{s}" for s in ("mmap", "munmap", "brk", "mprotect", "madvise")}
    wanted |= {"enter_clone", "enter_clone3", "enter_exit_group"}
    wanted |= {f"exit_{s}" for s in ("mmap", "munmap", "brk")}
    assert wanted <= seen


def test_committed_trace_fields_are_typed() -> None:
    """A recorded mmap pair, fork, exec and exit carry the right typed values."""
    events = read_trace(TRACES / "sh-ls-wc.trace")
    fork = next(e for e in events if isinstance(e, ProcessFork))
    assert fork.parent_pid == fork.pid == fork.tid and fork.child_pid != fork.parent_pid
    exe = next(e for e in events if isinstance(e, ProcessExec))
    assert exe.filename.startswith("/") and exe.old_pid == exe.tid
    ex = next(e for e in events if isinstance(e, ProcessExit))
    assert ex.group_dead is True
    i = next(i for i, e in enumerate(events) if isinstance(e, SysEnter) and e.name == "mmap")
    enter, leave = events[i], events[i + 1]
    assert isinstance(enter, SysEnter) and isinstance(leave, SysExit)
    assert set(enter.args) == {"addr", "len", "prot", "flags", "fd", "off"}
    assert leave.name == "mmap" and leave.ret > 0


def test_default_layout_trace_matches_the_pid_tid_layout() -> None:
    """The same perf.data printed with default fields gives the same records, pid unknown."""
    full = read_trace(TRACES / "sh-ls-wc.trace")
    default = read_trace(TRACES / "sh-ls-wc.default.trace")
    assert len(full) == len(default)
    assert all(d.pid is None for d in default)
    for f, d in zip(full, default, strict=True):
        assert (type(f), f.tid, f.comm) == (type(d), d.tid, d.comm)
    assert list(memory_ops(full)) == list(memory_ops(default))


# --- parsing synthetic lines in both layouts ------------------------------------------


@pytest.mark.parametrize("pid", [4242, None], ids=["pid/tid", "tid-only"])
def test_parses_every_event_kind(pid: int | None) -> None:
    """Each event kind is read with its fields, in both header layouts."""
    lines = [
        ln("Web Content", pid, 4243, "sched:sched_process_fork",
           "comm=Web Content pid=4243 child_comm=Web Content child_pid=4250"),
        ln("ls", pid, 4243, "sched:sched_process_exec",
           "filename=/usr/bin/ls pid=4243 old_pid=4244"),
        ln("ls", pid, 4243, "sched:sched_process_exit",
           "comm=ls pid=4243 prio=120 group_dead=false"),
        ln("ls", pid, 4243, "sched:sched_process_exit", "comm=ls pid=4243 prio=120"),
        ln("ls", pid, 4243, "syscalls:sys_enter_mremap",
           "addr: 0x7f0000000000, old_len: 0x00001000, new_len: 0x00002000, flags: 0x00000001, "
           "new_addr: 0x00000000"),
        ln("ls", pid, 4243, "syscalls:sys_exit_mremap", "0xfffffffffffffff4"),
        ln("ls", pid, 4243, "syscalls:sys_enter_vfork", ""),
        fault(pid, 4243, 0x7FFD_0000_1000, 0x6),
        fault(pid, 4243, 0x5611_DA8F_0240, 0x2, kernel=True),
        raw("ls", pid, 4243, "PERF_RECORD_LOST lost 33"),
        ln("ls", pid, 4243, "sched:sched_switch", "prev_comm=ls prev_pid=4243"),
    ]  # fmt: skip
    e = list(parse_lines(lines))
    assert e[0] == ProcessFork(1, "Web Content", pid, 4243, 0, 1000.000001,
                               "Web Content", 4243, "Web Content", 4250)  # fmt: skip
    assert isinstance(e[1], ProcessExec) and (e[1].filename, e[1].old_pid) == ("/usr/bin/ls", 4244)
    assert isinstance(e[2], ProcessExit) and e[2].group_dead is False and e[2].prio == 120
    assert isinstance(e[3], ProcessExit) and e[3].group_dead is None
    assert isinstance(e[4], SysEnter) and e[4].args["new_len"] == 0x2000
    assert isinstance(e[5], SysExit) and e[5].ret == -12
    assert isinstance(e[6], SysEnter) and (e[6].name, e[6].args) == ("vfork", {})
    assert isinstance(e[7], PageFault) and (e[7].address, e[7].ip) == (0x7FFD_0000_1000, 0x401000)
    assert isinstance(e[8], PageFault) and e[8].kernel and e[8].ip == "elf_load"
    assert isinstance(e[9], Lost) and e[9].count == 33
    assert isinstance(e[10], Other) and e[10].event == "sched:sched_switch"
    assert all(x.pid == pid and x.tid == 4243 and x.cpu == 0 for x in e)


@pytest.mark.parametrize(
    ("code", "write", "user", "present", "instruction"),
    [(0x6, True, True, False, False), (0x4, False, True, False, False),
     (0x14, False, True, False, True), (0x7, True, True, True, False),
     (0x2, True, False, False, False), (0x0, False, False, False, False)],
)  # fmt: skip
def test_fault_error_code_decodes_x86_bits(
    code: int, write: bool, user: bool, present: bool, instruction: bool
) -> None:
    """write is bit 1, user bit 2, present bit 0, instruction fetch bit 4 of the x86 code."""
    (ev,) = parse_lines([fault(1, 1, 0x1000, code)])
    assert isinstance(ev, PageFault)
    assert (ev.write, ev.user, ev.present, ev.instruction) == (write, user, present, instruction)


def test_blank_and_comment_lines_keep_line_numbers() -> None:
    """Blank lines and # comments make no record, and later records keep their true line."""
    lines = ["# perf script header\n", "\n", fault(1, 1, 0x1000, 6)]
    (ev,) = parse_lines(lines)
    assert ev.line == 3


# --- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("this is not perf output\n", "not a perf script line"),
        (ln("p", 1, 1, "exceptions:page_fault_user", "address=0x10 ip=0x10"), "page fault"),
        (ln("p", 1, 1, "syscalls:sys_enter_mmap", "addr: 0xzz"), "bad number"),
        (ln("p", 1, 1, "syscalls:sys_enter_mmap", "addr 0x10"), "not 'name: value'"),
        (ln("p", 1, 1, "syscalls:sys_exit_mmap", ""), "bad number"),
        (ln("p", 1, 1, "sched:sched_process_exec", "filename=/bin/sh"), "sched_process_exec"),
        (ln("p", 1, 1, "sched:sched_process_fork", "comm=sh pid=1"), "sched_process_fork"),
        (ln("p", 1, 1, "sched:sched_process_exit", "comm=sh"), "sched_process_exit"),
        ("  sh  1/1 [000]  1.000001: oddevent payload\n", "unknown event"),
    ],
)
def test_malformed_line_raises_input_error_with_its_line(bad: str, problem: str) -> None:
    """An unreadable line raises InputError naming the file, the line number and the problem."""
    lines = [fault(1, 1, 0x1000, 6), "\n", bad, fault(1, 1, 0x2000, 6)]
    with pytest.raises(InputError) as exc:
        list(parse_lines(lines, file="t.trace"))
    assert (exc.value.file, exc.value.line) == ("t.trace", 3)
    assert problem in exc.value.problem
    assert str(exc.value).startswith("t.trace:3: ")


def test_missing_trace_file_is_input_error(tmp_path: Path) -> None:
    """A trace file that cannot be opened is an InputError naming it."""
    with pytest.raises(InputError, match="cannot read trace"):
        read_trace(tmp_path / "nope.trace")


def test_missing_syscall_argument_is_input_error() -> None:
    """A paired mmap whose enter lacks an argument is an InputError at the enter's line."""
    lines = [
        ln("p", 1, 1, "syscalls:sys_enter_mmap", "addr: 0x0, len: 0x1000"),
        ln("p", 1, 1, "syscalls:sys_exit_mmap", "0x7f0000000000"),
    ]
    with pytest.raises(InputError) as exc:
        list(memory_ops(list(parse_lines(lines)), file="t.trace"))
    assert exc.value.line == 1 and "has no 'fd' argument" in exc.value.problem


# --- syscall pairing ------------------------------------------------------------------


def test_syscalls_pair_per_tid_with_the_returned_address() -> None:
    """Interleaved mmaps of two threads each get the address their own exit returned."""
    a, b = mmap_pair(10, 10, 0x1000, 0x7F00_0000_0000), mmap_pair(10, 11, 0x2000, 0x7F11_0000_0000)
    ops = ops_of([a[0], b[0], b[1], a[1]])
    assert [(o.tid, o.addr, o.length) for o in ops if isinstance(o, Mmap)] == [
        (11, 0x7F11_0000_0000, 0x2000),
        (10, 0x7F00_0000_0000, 0x1000),
    ]
    m = ops[1]
    assert isinstance(m, Mmap) and m.fd == -1 and m.hint == 0 and m.line == 1


def test_failed_and_unpaired_syscalls_are_skipped_with_reason() -> None:
    """Failed, unpaired, never-returning and exit-less paired syscalls become Skipped."""
    lines = [
        *mmap_pair(1, 1, 0x1000, (1 << 64) - 12),
        ln("p", 1, 1, "syscalls:sys_exit_munmap", "0x0"),
        ln("p", 1, 1, "syscalls:sys_enter_mremap", "addr: 0x0"),  # no mremap exit in the trace
        ln("p", 1, 1, "syscalls:sys_enter_brk", "brk: 0x00000000"),
        ln("p", 1, 1, "syscalls:sys_exit_brk", "0x5600000000"),
        ln("p", 1, 1, "syscalls:sys_enter_brk", "brk: 0x00000000"),
    ]
    reasons = [o.reason for o in ops_of(lines) if isinstance(o, Skipped)]
    assert reasons == [
        "mmap failed with errno 12",
        "sys_exit_munmap without its sys_enter",
        "mremap has no traced exit",
        "sys_enter_brk never returned",
    ]


def test_each_memory_syscall_resolves_to_its_op() -> None:
    """munmap, mremap, brk, mprotect and madvise resolve with their arguments."""
    lines = [
        ln("p", 1, 1, "syscalls:sys_enter_munmap", "addr: 0x7f0000000000, len: 0x00002000"),
        ln("p", 1, 1, "syscalls:sys_exit_munmap", "0x0"),
        ln("p", 1, 1, "syscalls:sys_enter_mremap",
           "addr: 0x7f0000000000, old_len: 0x00001000, new_len: 0x00003000, flags: 0x00000001, "
           "new_addr: 0x00000000"),
        ln("p", 1, 1, "syscalls:sys_exit_mremap", "0x7f1000000000"),
        ln("p", 1, 1, "syscalls:sys_enter_brk", "brk: 0x00000000"),
        ln("p", 1, 1, "syscalls:sys_exit_brk", "0x5600000000"),
        ln("p", 1, 1, "syscalls:sys_enter_brk", "brk: 0x5600021000"),
        ln("p", 1, 1, "syscalls:sys_exit_brk", "0x5600021000"),
        ln("p", 1, 1, "syscalls:sys_enter_mprotect", "start: 0x7f0000000000, len: 0x00001000, "
           "prot: 0x00000001"),
        ln("p", 1, 1, "syscalls:sys_enter_madvise", "start: 0x7f0000000000, len_in: 0x00200000, "
           "behavior: 0x00000004"),
    ]  # fmt: skip
    assert ops_of(lines) == [
        Munmap(1, 1, 1, "p", 0x7F00_0000_0000, 0x2000),
        Mremap(3, 1, 1, "p", 0x7F00_0000_0000, 0x1000, 0x3000, 1, 0x7F10_0000_0000, 0),
        Brk(5, 1, 1, "p", 0, None, 0x56_0000_0000),
        Brk(7, 1, 1, "p", 0x56_0002_1000, 0x56_0000_0000, 0x56_0002_1000),
        Mprotect(9, 1, 1, "p", 0x7F00_0000_0000, 0x1000, 1),
        Madvise(10, 1, 1, "p", 0x7F00_0000_0000, 0x20_0000, 4),
    ]


def test_kernel_address_faults_lost_events_and_other_events_are_skipped() -> None:
    """Faults on kernel addresses, PERF_RECORD_LOST and unknown tracepoints become Skipped."""
    lines = [
        fault(1, 1, 0xFFFF_8880_0000_0000, 0x0, kernel=True),
        ln("p", 1, 1, "sched:sched_switch", "prev_comm=p"),
        raw("p", 1, 1, "PERF_RECORD_LOST lost 7"),
    ]
    reasons = [o.reason for o in ops_of(lines) if isinstance(o, Skipped)]
    assert reasons == [
        "fault at a kernel address",
        "event sched:sched_switch is not modelled",
        "perf lost 7 events here: the trace is incomplete",
    ]


# --- clones -----------------------------------------------------------------------------


def test_traced_clone_flags_and_vfork_are_used_as_is() -> None:
    """clone's traced flags decide; vfork is CLONE_VM|CLONE_VFORK; neither is inferred."""
    lines = [
        ln("p", 1, 1, "syscalls:sys_enter_clone", "clone_flags: 0x01200011, newsp: 0x0"),
        ln("p", 1, 1, "sched:sched_process_fork", "comm=p pid=1 child_comm=p child_pid=2"),
        ln("p", 1, 1, "syscalls:sys_enter_vfork", ""),
        ln("p", 1, 1, "sched:sched_process_fork", "comm=p pid=1 child_comm=p child_pid=3"),
    ]
    c, v = ops_of(lines)
    assert isinstance(c, Clone) and c.flags == 0x01200011 and not c.inferred
    assert not c.thread and not c.share_mm and c.child_pid == 2
    assert isinstance(v, Vfork) and v.flags == VFORK_FLAGS and v.share_mm and v.vfork


def test_clone3_inference_on_a_real_thread_and_posix_spawn() -> None:
    """In a recorded trace, clone3 for a thread and for posix_spawn are told apart."""
    ops = list(memory_ops(read_trace(TRACES / "python3-thread-spawn.trace")))
    clones = [o for o in ops if isinstance(o, Clone)]
    assert [(c.syscall, c.inferred) for c in clones] == [
        ("clone3", True), ("clone3", True), ("clone", False),
    ]  # fmt: skip
    thread, spawn, fork = clones
    assert thread.thread and thread.child_pid == thread.pid
    assert spawn.flags == INFERRED_SPAWN_FLAGS and spawn.child_pid == spawn.child_tid
    assert not fork.share_mm
    exits = {o.tid: o for o in ops if isinstance(o, Exit)}
    assert exits[thread.child_tid].pid == thread.pid and not exits[thread.child_tid].group_dead


def test_make_spawns_its_shells_with_clone3_vfork_semantics() -> None:
    """make's posix_spawn children (clone3) are inferred CLONE_VM|CLONE_VFORK processes."""
    clones = [o for o in memory_ops(read_trace(TRACES / "make-j2.trace")) if isinstance(o, Clone)]
    assert clones and all(c.flags == INFERRED_SPAWN_FLAGS for c in clones)


def _clone3(pid: int | None, parent: int, child: int) -> list[str]:
    return [
        ln("p", pid, parent, "syscalls:sys_enter_clone3", "uargs: 0x7ffd0000, size: 0x00000058"),
        ln("p", pid, parent, "sched:sched_process_fork",
           f"comm=p pid={parent} child_comm=p child_pid={child}"),
    ]  # fmt: skip


def test_clone3_inference_in_the_tid_only_layout() -> None:
    """Without pids: a child that execs as its own leader is a process, else a thread."""
    lines = [
        *_clone3(None, 100, 101),
        fault(None, 101, 0x7F00_0000_0000, 0x6),
        ln("sh", None, 101, "sched:sched_process_exec", "filename=/bin/sh pid=101 old_pid=101"),
        *_clone3(None, 100, 102),
        fault(None, 102, 0x7F00_0000_1000, 0x6),
        ln("p", None, 102, "sched:sched_process_exit", "comm=p pid=102 prio=120 group_dead=true"),
    ]
    spawn, ex, thread, tex = without_faults(ops_of(lines))
    assert isinstance(spawn, Clone) and spawn.flags == INFERRED_SPAWN_FLAGS
    assert isinstance(ex, Exec) and ex.pid == 101
    assert isinstance(thread, Clone) and thread.flags == INFERRED_THREAD_FLAGS
    assert thread.child_pid == 100 and thread.flags & CLONE_THREAD
    assert isinstance(tex, Exit) and (tex.pid, tex.group_dead) == (100, False)


def test_clone3_child_whose_parent_runs_before_its_exec_is_a_fork() -> None:
    """A clone3 process child is not vfork-like when its parent ran before the child exec'd."""
    lines = [
        *_clone3(100, 100, 101),
        *mmap_pair(100, 100, 0x1000, 0x7F00_0000_0000),
        ln("sh", 101, 101, "sched:sched_process_exec", "filename=/bin/sh pid=101 old_pid=101"),
    ]
    clone = without_faults(ops_of(lines))[0]
    assert isinstance(clone, Clone) and clone.flags == INFERRED_FORK_FLAGS
    assert "parent ran" in clone.evidence


def test_clone3_thread_from_its_pid_in_the_pid_tid_layout() -> None:
    """With pids printed, a clone3 child whose records show the parent's tgid is a thread."""
    lines = [*_clone3(100, 100, 105), *mmap_pair(100, 105, 0x1000, 0x7F00_0000_0000)]
    clone, mm = ops_of(lines)
    assert isinstance(clone, Clone) and clone.thread and clone.child_pid == 100
    assert isinstance(mm, Mmap) and mm.pid == 100


# --- exec and exit --------------------------------------------------------------------


def test_exec_moves_new_image_faults_after_the_exec() -> None:
    """Kernel write faults on absent pages before exec come after it; old-mm faults stay."""
    lines = [
        fault(200, 200, 0x5500_0000_0000, 0x6),
        fault(200, 200, 0x7FFD_0000_0000, 0x0, kernel=True),  # reads execve's arguments
        fault(200, 200, 0x7FFD_0000_2000, 0x3, kernel=True),  # copy-on-write in the old mm
        fault(200, 200, 0x5611_0000_0000, 0x2, kernel=True),  # elf_load, new mm
        fault(200, 200, 0x7FFE_0000_0000, 0x2, kernel=True),  # create_elf_tables, new mm
        ln("ls", 200, 200, "sched:sched_process_exec", "filename=/bin/ls pid=200 old_pid=200"),
    ]
    ops = ops_of(lines)
    assert [type(o).__name__ for o in ops] == ["Fault", "Fault", "Fault", "Exec", "Fault", "Fault"]
    assert [o.line for o in ops] == [1, 2, 3, 6, 4, 5]


def test_exec_ordering_quirk_in_a_real_trace() -> None:
    """In a recorded trace each exec is followed by the elf_load faults recorded before it."""
    ops = list(memory_ops(read_trace(TRACES / "sh-ls-wc.trace")))
    for i, op in enumerate(ops):
        if isinstance(op, Exec):
            nxt = ops[i + 1]
            assert isinstance(nxt, Fault) and nxt.kernel and nxt.ip == "elf_load"
            assert nxt.line < op.line


def test_exit_reports_group_death_and_exit_group_code() -> None:
    """Exit is group_dead on the group's last task, with the exit_group status."""
    lines = [
        *_clone3(100, 100, 101),
        ln("p", 100, 101, "syscalls:sys_enter_exit_group", "error_code: 0x00000003"),
        ln("p", 100, 101, "sched:sched_process_exit", "comm=p pid=101 prio=120 group_dead=true"),
        ln("p", 100, 100, "sched:sched_process_exit", "comm=p pid=100 prio=120 group_dead=false"),
    ]
    _, first, last = ops_of(lines)
    assert isinstance(first, Exit) and (first.tid, first.group_dead, first.exit_code) == (
        101, False, 3)  # fmt: skip
    assert isinstance(last, Exit) and (last.tid, last.group_dead) == (100, True)


def test_non_leader_exec_takes_the_leader_pid() -> None:
    """An exec by a non-leader thread yields an Exec for the group with the old tid noted."""
    lines = [
        *_clone3(None, 100, 101),
        ln("sh", None, 100, "sched:sched_process_exec", "filename=/bin/sh pid=100 old_pid=101"),
        fault(None, 100, 0x7F00_0000_0000, 0x6),
    ]
    clone, exe, flt = ops_of(lines)
    assert isinstance(clone, Clone) and clone.thread
    assert isinstance(exe, Exec) and (exe.pid, exe.tid, exe.old_tid) == (100, 100, 101)
    assert isinstance(flt, Fault) and flt.pid == 100


# --- agreement with the live kernel -------------------------------------------------


def _fault_slots(
    ops: list[MemOp], areas: dict[int, tuple[int, int]] | None = None
) -> dict[int, int]:
    """Per process that exec'd: PTE + PMD + PUD slots its faults touched since exec, and
    those of its argument area at exit (``areas``: the strings its last exec copied
    without a traced fault; a process execs once in these traces)."""
    slots: dict[int, set[tuple[int, int]]] = {}
    done: dict[int, int] = {}
    for o in ops:
        if isinstance(o, Exec):
            slots[o.pid] = set()
            lo, hi = (areas or {}).get(o.pid, (0, 0))
            for page in range(lo >> 12, (hi + 4095) >> 12):
                slots[o.pid] |= {(s, page << 12 >> s) for s in (21, 30, 39)}
        elif isinstance(o, Fault) and o.pid in slots:
            slots[o.pid] |= {(s, o.address >> s) for s in (21, 30, 39)}
        elif isinstance(o, Exit) and o.group_dead and o.pid in slots:
            done[o.pid] = len(slots.pop(o.pid))
    return done


@pytest.mark.parametrize("path", [p for p in ALL_TRACES if Path(f"{p}.vmpte.json").exists()],
                         ids=lambda p: p.name)  # fmt: skip
def test_fault_slots_match_vmpte_at_exit(path: Path) -> None:
    """The tables implied by each exec'd process's faults equal the kernel's VmPTE at exit
    for most processes (this naive count ignores tables munmap frees, which the replay
    models: tests/workloads/test_replay.py requires exact agreement there)."""
    vmpte = {int(k): v for k, v in json.loads(Path(f"{path}.vmpte.json").read_text()).items()}
    side = Path(f"{path}.args.json")
    areas = trace_record.read_arg_areas(side) if side.exists() else None
    predicted = _fault_slots(list(memory_ops(read_trace(path))), areas)
    agree = sum(predicted[p] == vmpte[p] for p in predicted)
    assert predicted and agree >= 0.8 * len(predicted)


# --- kpsim record -------------------------------------------------------------------


def test_perf_record_argv_has_every_event_inherit_and_a_buffer() -> None:
    """perf record gets each tracepoint with -e, a -m buffer, no -a, and the command last."""
    argv = trace_record.perf_record_argv(
        "perf", Path("x.data"), ["ls", "-l"], trace_record.RECORD_EVENTS, "64M"
    )
    events = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert events == list(trace_record.RECORD_EVENTS) and len(events) == 19
    assert "-a" not in argv and "--no-inherit" not in argv
    assert argv[argv.index("-m") + 1] == "64M" and argv[-3:] == ["--", "ls", "-l"]


def _fake_perf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: Iterable[str]) -> str:
    """A PATH holding only a fake perf whose 'perf list' prints ``listing``, run as root."""
    monkeypatch.setattr(trace_record.os, "geteuid", lambda: 0)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    perf = bindir / "perf"
    perf.write_text("#!/bin/sh\necho '" + " ".join(listing) + "'\n")
    perf.chmod(perf.stat().st_mode | stat.S_IXUSR)
    return str(bindir)


def _record(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["record", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_record_without_perf_exits_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kpsim record with no perf on PATH says so in one line and exits 2."""
    monkeypatch.setenv("PATH", str(tmp_path))
    rc, _, err = _record(capsys, "-o", str(tmp_path / "t.trace"), "--", "true")
    assert rc == 2 and err == "kpsim record: perf is not installed (no 'perf' on PATH)\n"


def test_record_when_perf_sees_no_tracepoints_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A perf that may not read tracefs lists no tracepoints: not permitted, exit 2."""
    monkeypatch.setenv("PATH", _fake_perf(tmp_path, monkeypatch, []))
    rc, _, err = _record(capsys, "-o", str(tmp_path / "t.trace"), "--", "true")
    assert rc == 2 and "lists no tracepoints" in err and err.count("\n") == 1


def test_record_names_missing_tracepoints_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kernel without the x86 page-fault tracepoints is refused with their names."""
    have = [e for e in trace_record.RECORD_EVENTS if not e.startswith("exceptions:")]
    monkeypatch.setenv("PATH", _fake_perf(tmp_path, monkeypatch, have))
    rc, _, err = _record(capsys, "-o", str(tmp_path / "t.trace"), "--", "true")
    assert rc == 2 and err.count("\n") == 1
    assert "exceptions:page_fault_user, exceptions:page_fault_kernel" in err
    assert "--allow-missing" in err


def test_record_check_of_a_bad_trace_exits_2_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kpsim record --check on a trace with a bad line prints file:line: problem, exit 2."""
    bad = tmp_path / "bad.trace"
    bad.write_text(fault(1, 1, 0x1000, 6) + "garbage\n")
    rc, out, err = _record(capsys, "--check", str(bad))
    assert rc == 2 and out == ""
    assert err.startswith(f"kpsim record: {bad}:2: not a perf script line") and err.count("\n") == 1


def test_record_check_summarises_a_good_trace(capsys: pytest.CaptureFixture[str]) -> None:
    """kpsim record --check --json counts records, ops and processes of a recorded trace."""
    rc, out, _ = _record(capsys, "--check", str(TRACES / "sh-ls-wc.trace"), "--json")
    doc = json.loads(out)
    assert rc == 0 and sorted(doc["processes"].values()) == ["ls", "sh", "wc"]
    assert doc["records"]["ProcessExec"] == 3 and doc["skipped"] == {}


def _perf_usable() -> bool:
    if shutil.which("perf") is None or os.geteuid() != 0:
        return False
    try:
        seen = trace_record.check_permitted(trace_record.find_perf())
    except InputError:
        return False
    return not trace_record.missing_tracepoints(seen)


needs_perf = pytest.mark.skipif(not _perf_usable(), reason="perf cannot record tracepoints here")


@needs_perf
def test_record_true_end_to_end_with_vmpte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recording /bin/true writes a parseable trace, reports its status and its VmPTE."""
    out_file = tmp_path / "true.trace"
    rc, out, _ = _record(capsys, "--vmpte", "-o", str(out_file), "--json", "--", "true")
    doc = json.loads(out)
    assert rc == 0 and doc["exit_status"] == 0 and doc["lost_events"] == 0
    ops = list(memory_ops(read_trace(out_file)))
    (exe,) = [o for o in ops if isinstance(o, Exec)]
    vmpte = json.loads(Path(f"{out_file}.vmpte.json").read_text())
    assert list(vmpte) == [str(exe.pid)] and _fault_slots(ops) == {exe.pid: vmpte[str(exe.pid)]}
    # the argument area at exit: true's own strings, below the stack's top
    ((pid, (arg_start, env_end)),) = json.loads(Path(f"{out_file}.args.json").read_text()).items()
    assert pid == str(exe.pid) and 0 < env_end - arg_start < 1 << 20
    assert doc["args_file"] == f"{out_file}.args.json"


@needs_perf
def test_record_exits_with_the_commands_status_summary_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As perf record: kpsim exits with the command's status (3), the summary is on
    stderr and stdout is the command's own; exit 0 for a command that succeeds."""
    trace = tmp_path / "t.trace"
    rc, out, err = _record(capsys, "-o", str(trace), "--", "sh", "-c", "exit 3")
    assert rc == 3 and out == ""
    assert err.startswith(f"kpsim record: {trace}: ") and "exited with status 3" in err
    assert _record(capsys, "-o", str(trace), "--", "true")[0] == 0


@needs_perf
def test_record_of_a_command_killed_by_a_signal_is_128_plus_n(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command killed by SIGTERM: exit status 143, as a shell reports it."""
    rc, _, err = _record(capsys, "-o", str(tmp_path / "t.trace"), "--", "sh", "-c", "kill $$")
    assert rc == 128 + 15 and "was killed by SIGTERM" in err


@needs_perf
def test_record_p_pid_follows_a_running_process_until_it_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-p PID attaches to a running shell; perf stops when it exits; the trace holds
    what the shell forks and execs after the attach (its ls and sleep commands). The
    shell runs ls every 0.1 s for 4 s, so that perf attaching late on a loaded host
    still sees some; the first second is before any (attached in time or not)."""
    import subprocess
    import time

    script = "sleep 1; i=0; while [ $i -lt 40 ]; do ls / > /dev/null; sleep 0.1; i=$((i+1)); done"
    proc = subprocess.Popen(["sh", "-c", script])
    time.sleep(0.1)
    trace = tmp_path / "p.trace"
    rc, out, err = _record(capsys, "-p", str(proc.pid), "-o", str(trace), "--json")
    proc.wait()
    doc = json.loads(out)
    assert rc == 0 and f"processes {proc.pid} recorded" in err
    assert "ls" in doc["summary"]["processes"].values()
    assert doc["summary"]["records"]["ProcessExec"] >= 2  # at least one ls and one sleep
    assert doc["summary"]["records"]["ProcessExec"] <= 81  # only the shell's: 40 + 41


@needs_perf
def test_record_a_is_system_wide(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-a -- CMD records every CPU during CMD: CMD's exec is there, status is CMD's."""
    trace = tmp_path / "a.trace"
    rc, out, err = _record(capsys, "-a", "-o", str(trace), "--json", "--", "sh", "-c", "exit 4")
    doc = json.loads(out)
    assert rc == 4 and "the whole system during command" in err
    assert doc["summary"]["records"]["ProcessExec"] >= 1


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("-p", "1", "--", "true"), "give no command and no -a"),
        (("-p", "1", "-a"), "give no command and no -a"),
        (("-p", "x1"), "expected PID[,PID...]"),
        (("-p", "999999999"), "no process 999999999"),
        (("--vmpte", "-a", "--", "true"), "not with -p or -a"),
    ],
)
def test_record_bad_targets_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], problem: str
) -> None:
    """-p with a command or -a, a bad PID, --vmpte with -a: one line, exit 2, before perf."""
    rc, out, err = _record(capsys, "-o", str(tmp_path / "t.trace"), *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and problem in err
    assert not (tmp_path / "t.trace").exists()


def test_perf_record_argv_for_p_and_a() -> None:
    """-p PIDS and -a reach perf record; no command means no '--'."""
    argv = trace_record.perf_record_argv(
        "perf", Path("x.data"), [], trace_record.RECORD_EVENTS, "64M", pids="12,34"
    )
    assert argv[argv.index("-p") + 1] == "12,34" and "--" not in argv and "-a" not in argv
    argv = trace_record.perf_record_argv(
        "perf", Path("x.data"), ["true"], trace_record.RECORD_EVENTS, "64M", system_wide=True
    )
    assert "-a" in argv and argv[-2:] == ["--", "true"]
