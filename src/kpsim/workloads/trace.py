"""Reading ``perf script`` text traces of a program's memory behaviour.

Models nothing of the kernel itself: this is the input side of ``kpsim replay``. It
reads the text ``perf script`` prints for the tracepoints ``kpsim record`` enables
(``sched:sched_process_{fork,exec,exit}``, ``syscalls:sys_{enter,exit}_*`` and
``exceptions:page_fault_{user,kernel}``, see :mod:`kpsim.workloads.trace_record`)
and turns it into typed records, then into resolved memory operations.

Any ``perf script -F`` field set that carries a thread id, the event name and the
tracepoint fields is accepted, told apart line by line; perf prints the fields it is
given in a fixed order, ``comm  pid/tid [cpu] time: event: fields``, each optional:

- ``-F comm,pid,tid,cpu,time,event,trace`` (what ``kpsim record`` writes) and perf's
  default field set ``comm  tid [cpu] time: event: fields`` are read by one fast
  pattern. With the thread id only (no ``pid``) :attr:`Record.pid` is ``None`` and
  :func:`memory_ops` works out the thread group from the clone flags and exec records;
  a lone ``pid`` prints the same number and is read as the thread id (right for
  single-threaded processes only);
- without ``comm``, ``cpu`` or ``time`` (``-F tid,event,trace``) the record has
  ``comm=""``, ``cpu=-1``, ``time=0.0`` (the replay uses none of them); ``ip``,
  ``sym`` and ``dso`` after the tracepoint fields are dropped;
- a field set without ``tid``/``pid``, ``event`` or ``trace`` cannot be replayed: the
  first line says which field is missing (:class:`kpsim.errors.InputError`).

Every record carries its 1-based line number. A line that cannot be read raises
:class:`kpsim.errors.InputError` naming the file, the line and the problem; blank
lines and ``#`` comments are the only lines without a record. Tracepoints other
than the ones above become :class:`Other` records, perf's ``PERF_RECORD_LOST``
lines (``--show-lost-events``) become :class:`Lost`.

Left out: raw (``--raw-trace``) output, fields perf prints between the header and the
event (``period``, ``misc``, ``flags``...), and the x86 syscall numbers (the text
format does not print ``__syscall_nr``). The page-fault tracepoints exist on x86
only, so error codes are decoded with the x86 layout.

:func:`memory_ops` (second half of this module) pairs syscall enters with their
exits per thread and resolves clones, execs and exits; its rules are documented
on the function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike

from kpsim.errors import InputError, last_line

# --- x86 page-fault error code (arch/x86/include/asm/trap_pf.h) --------------------

X86_PF_PROT = 1 << 0  # 0: not-present page, 1: protection fault on a present page
X86_PF_WRITE = 1 << 1  # 0: read access, 1: write access
X86_PF_USER = 1 << 2  # 0: kernel-mode access, 1: user-mode access
X86_PF_RSVD = 1 << 3  # a reserved bit was set in a paging-structure entry
X86_PF_INSTR = 1 << 4  # the access was an instruction fetch
X86_PF_PK = 1 << 5  # protection-key violation

#: x86_64 user space ends here (4-level paging); higher fault addresses are kernel ones.
X86_64_USER_END = 1 << 47


# --- records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """What every trace line carries: where it is and which task emitted it."""

    line: int
    comm: str
    pid: int | None  # thread-group id; None when the layout printed the tid only
    tid: int
    cpu: int
    time: float


@dataclass(frozen=True, slots=True)
class ProcessFork(Record):
    """``sched:sched_process_fork``: ``parent_pid`` created ``child_pid`` (both tids)."""

    parent_comm: str
    parent_pid: int
    child_comm: str
    child_pid: int


@dataclass(frozen=True, slots=True)
class ProcessExec(Record):
    """``sched:sched_process_exec``: the task now runs ``filename``.

    ``old_pid`` is the tid before exec; it differs from :attr:`tid` when a thread
    other than the group leader called execve (the kernel gives it the leader's id).
    """

    filename: str
    old_pid: int


@dataclass(frozen=True, slots=True)
class ProcessExit(Record):
    """``sched:sched_process_exit``: the task exits (``group_dead``: None if not printed)."""

    prio: int
    group_dead: bool | None


@dataclass(frozen=True, slots=True)
class SysEnter(Record):
    """``syscalls:sys_enter_NAME``: ``name`` without the prefix, arguments by field name."""

    name: str
    args: dict[str, int]


@dataclass(frozen=True, slots=True)
class SysExit(Record):
    """``syscalls:sys_exit_NAME``: the return value, sign-extended (``-12`` is -ENOMEM)."""

    name: str
    ret: int


@dataclass(frozen=True, slots=True)
class PageFault(Record):
    """``exceptions:page_fault_user`` / ``page_fault_kernel`` (``kernel`` tells which).

    ``address`` and ``ip`` are numbers, or the kernel symbol perf printed instead
    (the tracepoint formats them with ``%ps``: kernel-mode ips, kernel addresses).
    """

    address: int | str
    ip: int | str
    error_code: int
    kernel: bool

    @property
    def write(self) -> bool:
        """The access was a write (x86 error code bit 1)."""
        return bool(self.error_code & X86_PF_WRITE)

    @property
    def user(self) -> bool:
        """The access was made in user mode (x86 error code bit 2)."""
        return bool(self.error_code & X86_PF_USER)

    @property
    def present(self) -> bool:
        """The page was present: a protection fault such as copy-on-write (bit 0)."""
        return bool(self.error_code & X86_PF_PROT)

    @property
    def instruction(self) -> bool:
        """The access was an instruction fetch (x86 error code bit 4)."""
        return bool(self.error_code & X86_PF_INSTR)


@dataclass(frozen=True, slots=True)
class Lost(Record):
    """``PERF_RECORD_LOST``: perf dropped ``count`` events here; the trace is incomplete."""

    count: int


@dataclass(frozen=True, slots=True)
class Other(Record):
    """A tracepoint this module does not model, kept with its text."""

    event: str
    text: str


Event = ProcessFork | ProcessExec | ProcessExit | SysEnter | SysExit | PageFault | Lost | Other


# --- parsing ----------------------------------------------------------------------

# The header, with the page-fault payload (most lines) read by the same match.
_HEAD = re.compile(
    r" *+(.*?) +(\d++)(?:/(\d++))? +\[(\d++)\] +(\d+\.\d+): +(\S++) "
    r"?(?:address=(\S++) ip=(\S++) error_code=0x([0-9a-fA-F]++)$)?(.*)",
)
#: Any field set: each header field optional, in perf's order (``perf_sample__fprintf_start``).
_GENERAL = re.compile(
    r" *(?:(.*?) +)??(\d+)(?:/(\d+))? +(?:\[(\d+)\] +)?(?:(\d+\.\d+): +)?"
    r"([\w.-]+:[\w.-]+:|PERF_RECORD_LOST)(?: (.*?))?\s*$"
)
_EVENT = re.compile(r"(?:^| )([\w.-]+:[\w.-]+:|PERF_RECORD_LOST)(?: |$)")
_TID = re.compile(r"(?:^| )\d+(?:/\d+)? ")
#: ``-F ip,sym,dso`` after the tracepoint fields: a kernel ip (16 hex digits), symbol, dso
_IP_TAIL = re.compile(r" +[0-9a-f]{1,16}(?: [^ ()]+)?(?: \([^)]*\))?$")
_FAULT = re.compile(r"address=(\S+) ip=(\S+) error_code=(0x[0-9a-fA-F]+)$")
_FAULT_EVENTS = {"exceptions:page_fault_user:": False, "exceptions:page_fault_kernel:": True}
_FORK = re.compile(r"comm=(.*) pid=(-?\d+) child_comm=(.*) child_pid=(-?\d+)$")
_EXEC = re.compile(r"filename=(.*) pid=(-?\d+) old_pid=(-?\d+)$")
_EXIT = re.compile(r"comm=(.*) pid=(-?\d+) prio=(-?\d+)(?: group_dead=(true|false))?$")
_LOST = re.compile(r"lost (\d+)$")

_SIGN = 1 << 63
_WRAP = 1 << 64

_Head = tuple[int, str, int | None, int, int, float]
_Parse = Callable[[str, _Head], Event]


class _Bad(Exception):
    """A payload this module cannot read; the reader adds file and line."""


def _num(text: str) -> int | str:
    """A ``%ps`` value: the number when perf printed one, else the symbol name."""
    return int(text, 16) if text.startswith("0x") else text


def _fault(kernel: bool) -> _Parse:
    def parse(rest: str, h: _Head) -> Event:
        m = _FAULT.match(rest)
        if m is None:
            raise _Bad(f"page fault without address=, ip= and error_code=: {rest!r}")
        a, ip, ec = m.groups()
        return PageFault(*h, _num(a), _num(ip), int(ec, 16), kernel)

    return parse


def _fork(rest: str, h: _Head) -> Event:
    m = _FORK.match(rest)
    if m is None:
        raise _Bad(f"sched_process_fork fields not understood: {rest!r}")
    pc, pp, cc, cp = m.groups()
    return ProcessFork(*h, pc, int(pp), cc, int(cp))


def _exec(rest: str, h: _Head) -> Event:
    m = _EXEC.match(rest)
    if m is None:
        raise _Bad(f"sched_process_exec fields not understood: {rest!r}")
    return ProcessExec(*h, m.group(1), int(m.group(3)))


def _exit(rest: str, h: _Head) -> Event:
    m = _EXIT.match(rest)
    if m is None:
        raise _Bad(f"sched_process_exit fields not understood: {rest!r}")
    dead = m.group(4)
    return ProcessExit(*h, int(m.group(3)), None if dead is None else dead == "true")


def _lost(rest: str, h: _Head) -> Event:
    m = _LOST.match(rest)
    if m is None:
        raise _Bad(f"PERF_RECORD_LOST without a count: {rest!r}")
    return Lost(*h, int(m.group(1)))


def _sys_enter(name: str) -> _Parse:
    def parse(rest: str, h: _Head) -> Event:
        args: dict[str, int] = {}
        if rest:
            for part in rest.split(", "):
                key, sep, value = part.partition(": ")
                if not sep:
                    raise _Bad(f"sys_enter_{name}: argument {part!r} is not 'name: value'")
                args[key] = int(value, 16)
        return SysEnter(*h, name, args)

    return parse


def _sys_exit(name: str) -> _Parse:
    def parse(rest: str, h: _Head) -> Event:
        ret = int(rest, 16)
        return SysExit(*h, name, ret - _WRAP if ret >= _SIGN else ret)

    return parse


def _other(event: str) -> _Parse:
    def parse(rest: str, h: _Head) -> Event:
        return Other(*h, event, rest)

    return parse


def _parser_for(event: str) -> _Parse:
    """The payload reader for one event token as perf prints it (``sys:name:``)."""
    fixed: dict[str, _Parse] = {
        "exceptions:page_fault_user:": _fault(False),
        "exceptions:page_fault_kernel:": _fault(True),
        "sched:sched_process_fork:": _fork,
        "sched:sched_process_exec:": _exec,
        "sched:sched_process_exit:": _exit,
        "PERF_RECORD_LOST": _lost,
    }
    if event in fixed:
        return fixed[event]
    if event.startswith("syscalls:sys_enter_") and event.endswith(":"):
        return _sys_enter(event[19:-1])
    if event.startswith("syscalls:sys_exit_") and event.endswith(":"):
        return _sys_exit(event[18:-1])
    if event.endswith(":") and ":" in event[:-1]:
        return _other(event[:-1])
    if "=" in event:  # tracepoint fields where the event name should be
        raise _Bad(
            "no event name: the perf script field set lacks 'event' "
            "(record with -F tid,event,trace or more)"
        )
    raise _Bad(f"unknown event {event!r} (expected subsystem:event:)")


#: Events that cannot be read without their tracepoint fields (``-F trace``).
_NEED_TRACE = (
    "exceptions:page_fault_user:",
    "exceptions:page_fault_kernel:",
    "sched:sched_process_fork:",
    "sched:sched_process_exec:",
    "sched:sched_process_exit:",
    "syscalls:sys_exit_",
)


def _missing_field(text: str) -> str:
    """Why a line fits no field set: the ``perf script -F`` field it lacks, if any."""
    ev = _EVENT.search(text)
    if ev is None:
        if "=" in text:
            return (
                "no event name: the perf script field set lacks 'event' "
                "(record with -F tid,event,trace or more)"
            )
        return "not a perf script line (comm [pid/]tid [cpu] time: event: ...)"
    if _TID.search(text[: ev.start(1)]) is None:
        return (
            "no thread id before the event: the perf script field set lacks 'tid' "
            "(record with -F tid,event,trace or more)"
        )
    return "not a perf script line (comm [pid/]tid [cpu] time: event: ...)"


def _general(text: str) -> tuple[str, int | None, int, int, float, str, str]:
    """The header and payload of a line in any field set (see the module docstring)."""
    g = _GENERAL.match(text)
    if g is None:
        raise _Bad(_missing_field(text))
    comm, a, b, cpu, t, event, rest = g.groups()
    pid, tid = (None, int(a)) if b is None else (int(a), int(b))
    return comm or "", pid, tid, -1 if cpu is None else int(cpu), float(t or 0), event, rest or ""


def _payload(event: str, rest: str, first: bool) -> str:
    """``rest`` without a trailing ``-F ip,sym,dso``; on the ``first`` record, a missing
    ``trace`` field named (later, an empty payload is one bad line, not a field set)."""
    if "  " in rest or " ffff" in rest:  # cheap test first: a user ip is padded to 16
        rest = _IP_TAIL.sub("", rest)  # columns, a kernel one starts ffff (no 0x prefix)
    if first and not rest and event.startswith(_NEED_TRACE):
        raise _Bad(
            f"{event} without its fields: the perf script field set lacks 'trace' "
            "(record with -F tid,event,trace or more)"
        )
    return rest


def parse_lines(lines: Iterable[str], *, file: str = "<trace>") -> Iterator[Event]:
    """Parse ``perf script`` lines into records, in order.

    Raises :class:`InputError` (with ``file`` and the line number) on the first line
    it cannot read.
    """
    parsers: dict[str, _Parse] = {}
    head = _HEAD.match
    faults = _FAULT_EVENTS
    n = 0
    first = True
    try:
        for n, text in enumerate(lines, 1):
            m = head(text)
            if m is None:
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                comm, pid, tid, ncpu, time, event, rest = _general(text)
                parse = parsers.get(event)
                if parse is None:
                    parse = parsers[event] = _parser_for(event)
                yield parse(_payload(event, rest, first), (n, comm, pid, tid, ncpu, time))
                first = False
                continue
            comm, a, b, cpu, t, event, addr, ip, ec, rest = m.groups()
            pid, tid = (None, int(a)) if b is None else (int(a), int(b))
            if addr is not None:
                kernel = faults.get(event)
                if kernel is not None:  # the hot path: one match, no payload parser
                    first = False
                    yield PageFault(
                        n, comm, pid, tid, int(cpu), float(t),
                        int(addr, 16) if addr.startswith("0x") else addr,
                        int(ip, 16) if ip.startswith("0x") else ip,
                        int(ec, 16), kernel,
                    )  # fmt: skip
                    continue
                rest = text[m.start(7) :].rstrip("\n")
            parse = parsers.get(event)
            if parse is None:
                parse = parsers[event] = _parser_for(event)
            yield parse(_payload(event, rest, first), (n, comm, pid, tid, int(cpu), float(t)))
            first = False
    except _Bad as err:
        raise InputError(str(err), file=file, line=n) from None
    except InputError:  # from ``lines`` itself (:func:`_whole_lines`)
        raise
    except ValueError as bad:  # not ``err``: compiled, one name must keep one type
        raise InputError(f"bad number: {bad}", file=file, line=n) from None


def iter_trace(path: str | PathLike[str]) -> Iterator[Event]:
    """Parse a trace file lazily (see :func:`parse_lines`)."""
    name = str(path)
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - generator owns it
    except OSError as err:
        raise InputError(f"cannot read trace: {err.strerror}", file=name) from None
    with f:
        yield from parse_lines(_whole_lines(f, name), file=name)


def _whole_lines(lines: Iterable[str], name: str) -> Iterator[str]:
    """``lines``, refusing a last line cut off before its newline: ``perf script``
    ends every line with one, so the file is an incomplete copy and that record's
    fields (an address, a return value) may be cut short."""
    for n, text in enumerate(lines, 1):
        if not text.endswith("\n") and text.strip() and not text.lstrip().startswith("#"):
            raise InputError(
                "the trace ends in the middle of this line (no newline): truncated file?",
                file=name,
                line=n,
            )
        yield text


def read_trace(path: str | PathLike[str]) -> list[Event]:
    """Parse a whole trace file into a list of records (``InputError`` if it has none)."""
    events = list(iter_trace(path))
    if not events:  # named at its last line, as every rejection names one
        with open(path, "rb") as f:
            end = last_line(f.read().decode("utf-8", "replace"))
        raise InputError("no perf script records: empty trace", file=str(path), line=end)
    return events


# --- resolved memory operations ---------------------------------------------------

# include/uapi/linux/sched.h
CLONE_VM = 0x0000_0100
CLONE_VFORK = 0x0000_4000
CLONE_THREAD = 0x0001_0000
SIGCHLD = 17

#: Flags assumed when a clone's flags are not in the trace (see :func:`memory_ops`):
#: glibc's pthread_create, glibc's posix_spawn, and a plain fork.
INFERRED_THREAD_FLAGS = 0x003D_0F00  # VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|*_SETTID/CLEARTID
INFERRED_SPAWN_FLAGS = CLONE_VM | CLONE_VFORK | SIGCHLD
INFERRED_FORK_FLAGS = SIGCHLD
VFORK_FLAGS = CLONE_VM | CLONE_VFORK | SIGCHLD  # kernel/fork.c, sys_vfork

#: Syscalls whose exit carries the result :func:`memory_ops` needs (the new address).
PAIRED_SYSCALLS = frozenset({"mmap", "munmap", "mremap", "brk"})
_CLONES = frozenset({"clone", "clone3", "vfork"})
_MAX_ERRNO = 4095


@dataclass(frozen=True, slots=True)
class Op:
    """A resolved operation of one task: ``pid`` is always the thread-group id."""

    line: int
    pid: int
    tid: int
    comm: str


@dataclass(frozen=True, slots=True)
class Mmap(Op):
    """mmap that succeeded: ``addr`` is the address the kernel returned, ``hint`` the asked one."""

    addr: int
    length: int
    prot: int
    flags: int
    fd: int  # -1 for anonymous mappings
    offset: int
    hint: int


@dataclass(frozen=True, slots=True)
class Munmap(Op):
    """munmap that succeeded."""

    addr: int
    length: int


@dataclass(frozen=True, slots=True)
class Mremap(Op):
    """mremap that succeeded: ``new_addr`` is the returned address, ``hint`` the asked one."""

    old_addr: int
    old_len: int
    new_len: int
    flags: int
    new_addr: int
    hint: int


@dataclass(frozen=True, slots=True)
class Brk(Op):
    """brk: the break moved from ``old`` (None: not seen since exec) to ``new``."""

    requested: int
    old: int | None
    new: int


@dataclass(frozen=True, slots=True)
class Mprotect(Op):
    """mprotect as asked (its exit is not traced, so success is assumed)."""

    addr: int
    length: int
    prot: int


@dataclass(frozen=True, slots=True)
class Madvise(Op):
    """madvise as asked (its exit is not traced, so success is assumed)."""

    addr: int
    length: int
    behavior: int


@dataclass(frozen=True, slots=True)
class Clone(Op):
    """A new task ``child_tid`` in thread group ``child_pid``, made by ``syscall``.

    ``flags`` are the traced clone flags, or (``inferred``) the flags assumed from
    what the child did later; ``evidence`` says which rule decided.
    """

    child_tid: int
    child_pid: int
    flags: int
    syscall: str  # clone, clone3, vfork, or "?" (no traced syscall before the fork)
    inferred: bool
    evidence: str

    @property
    def thread(self) -> bool:
        """The child joins the parent's thread group (CLONE_THREAD)."""
        return bool(self.flags & CLONE_THREAD)

    @property
    def share_mm(self) -> bool:
        """The child runs in the parent's mm (CLONE_VM): always, or until it execs."""
        return bool(self.flags & CLONE_VM)

    @property
    def vfork(self) -> bool:
        """The parent waits until the child execs or exits (CLONE_VFORK)."""
        return bool(self.flags & CLONE_VFORK)


@dataclass(frozen=True, slots=True)
class Vfork(Clone):
    """vfork(2): a :class:`Clone` with CLONE_VM | CLONE_VFORK."""


@dataclass(frozen=True, slots=True)
class Exec(Op):
    """execve succeeded: the task's thread group has a new mm (``old_tid``: tid before)."""

    filename: str
    old_tid: int


@dataclass(frozen=True, slots=True)
class Exit(Op):
    """A task exits; ``group_dead``: it was the last task of its thread group."""

    group_dead: bool
    exit_code: int | None  # from exit_group, when traced


@dataclass(frozen=True, slots=True)
class Fault(Op):
    """A page fault at a user address (``kernel``: taken in kernel mode, e.g. copy_to_user)."""

    address: int
    error_code: int
    kernel: bool
    ip: int | str

    @property
    def write(self) -> bool:
        """The access was a write (x86 error code bit 1)."""
        return bool(self.error_code & X86_PF_WRITE)

    @property
    def user(self) -> bool:
        """The access was made in user mode (x86 error code bit 2)."""
        return bool(self.error_code & X86_PF_USER)

    @property
    def present(self) -> bool:
        """The page was present (a protection fault: copy-on-write, mprotect)."""
        return bool(self.error_code & X86_PF_PROT)


@dataclass(frozen=True, slots=True)
class Skipped(Op):
    """A record that changes no user mapping, or cannot be modelled; ``reason`` says which."""

    reason: str


MemOp = Mmap | Munmap | Mremap | Brk | Mprotect | Madvise | Clone | Exec | Exit | Fault | Skipped


# --- planning pass: what needs the future to be decided ------------------------------


class _Guess:
    """A fork whose clone flags are not in the trace, waiting for evidence."""

    __slots__ = ("child", "exit_group_at", "index", "parent", "parent_back", "syscall", "thread")

    def __init__(self, index: int, parent: int, child: int, syscall: str) -> None:
        self.index, self.parent, self.child, self.syscall = index, parent, child, syscall
        self.thread: bool | None = None  # stage 1: thread or process
        self.parent_back: int | None = None  # the parent's first record after the fork
        self.exit_group_at: int | None = None


_ForkInfo = tuple[str, int, bool, str]  # syscall, flags, inferred, evidence


class _Plan:
    """What :func:`memory_ops` must know ahead: fork flags, reordered exec faults."""

    __slots__ = ("exits", "forks", "guesses", "moved", "runs", "skip", "watch")

    def __init__(self) -> None:
        self.forks: dict[int, _ForkInfo] = {}  # fork record index -> flags and how
        self.moved: dict[int, list[int]] = {}  # exec index -> fault indices replayed after it
        self.skip: set[int] = set()  # fault indices moved after their exec
        self.exits: set[str] = set()  # syscalls whose exits the trace holds
        self.guesses: dict[int, _Guess] = {}  # child tid -> open guess
        self.watch: dict[int, list[_Guess]] = {}  # parent tid -> guesses awaiting its return
        self.runs: dict[int, list[int]] = {}  # tid -> indices of its current kernel-fault run

    def decide(self, g: _Guess, flags: int, evidence: str) -> None:
        self.forks[g.index] = (g.syscall, flags, True, evidence)
        self.guesses.pop(g.child, None)

    def decide_process(self, g: _Guess, end: int, what: str) -> None:
        """Stage 2: CLONE_VM|CLONE_VFORK iff the parent stayed silent until ``end``."""
        if g.parent_back is None or g.parent_back > end:
            self.decide(g, INFERRED_SPAWN_FLAGS, f"own thread group; parent silent until {what}")
        else:
            self.decide(g, INFERRED_FORK_FLAGS, f"own thread group; parent ran before {what}")


def _image_faults(evs: Sequence[Event], run: list[int]) -> list[int]:
    """The faults of a pre-exec kernel-fault run that build the new image.

    They are the longest suffix of write faults on not-present pages: the new mm is
    empty, while faults in the old mm before execve reads its arguments (reads) or
    breaks copy-on-write (present pages).
    """
    k = len(run)
    while k > 0:
        ev = evs[run[k - 1]]
        assert isinstance(ev, PageFault)
        if ev.error_code & (X86_PF_WRITE | X86_PF_PROT) != X86_PF_WRITE:
            break
        k -= 1
    return run[k:]


def _on_exec(plan: _Plan, evs: Sequence[Event], i: int, ev: ProcessExec) -> None:
    run = plan.runs.pop(ev.tid, None) or plan.runs.pop(ev.old_pid, None)
    moved = _image_faults(evs, run) if run else []
    if moved:
        plan.moved[i] = moved
        plan.skip.update(moved)
    g = plan.guesses.get(ev.old_pid)
    if g is None:
        return
    if ev.tid != ev.old_pid:
        plan.decide(g, INFERRED_THREAD_FLAGS, "exec by a non-leader thread")
    else:
        plan.decide_process(g, moved[0] if moved else i, "its exec")


def _observe(plan: _Plan, g: _Guess, i: int, ev: Event) -> None:
    """Evidence from one record of the child ``g.child`` (other than its exec)."""
    if g.thread is None and ev.pid is not None:
        if ev.pid != g.child:
            plan.decide(g, INFERRED_THREAD_FLAGS, f"its records show thread group {ev.pid}")
            return
        g.thread = False
    if isinstance(ev, SysEnter) and ev.name == "exit_group":
        g.exit_group_at = i
    elif isinstance(ev, ProcessExit):
        if g.thread is False:
            plan.decide_process(g, g.exit_group_at or i, "its exit")
        else:  # the tid-only layout, no exec: nothing more will come
            _finish(plan, g)


def _on_fork(plan: _Plan, pending: dict[int, SysEnter], i: int, ev: ProcessFork) -> None:
    enter = pending.pop(ev.tid, None)
    syscall = enter.name if enter is not None else "?"
    if syscall == "vfork":
        plan.forks[i] = ("vfork", VFORK_FLAGS, False, "vfork(2)")
        return
    if enter is not None and syscall == "clone" and "clone_flags" in enter.args:
        plan.forks[i] = ("clone", enter.args["clone_flags"], False, "traced clone_flags")
        return
    old = plan.guesses.get(ev.child_pid)
    if old is not None:  # the tid was reused before anything decided: keep the default
        _finish(plan, old)
    g = _Guess(i, ev.tid, ev.child_pid, syscall)
    plan.guesses[ev.child_pid] = g
    plan.watch.setdefault(ev.tid, []).append(g)


def _finish(plan: _Plan, g: _Guess) -> None:
    """End of evidence: defaults for a child that never decided."""
    if g.thread is False:
        plan.decide_process(g, 1 << 62, "the end of the trace")
    else:
        plan.decide(g, INFERRED_THREAD_FLAGS, "no exec as a process leader: assumed a thread")


def _plan(evs: Sequence[Event]) -> _Plan:
    plan = _Plan()
    pending: dict[int, SysEnter] = {}  # the last clone-family enter per tid
    runs, guesses, watch = plan.runs, plan.guesses, plan.watch
    for i, ev in enumerate(evs):
        tid = ev.tid
        if tid in watch:
            for w in watch.pop(tid):
                if w.parent_back is None:
                    w.parent_back = i
        if isinstance(ev, PageFault):
            if ev.kernel:
                runs.setdefault(tid, []).append(i)
            else:
                runs.pop(tid, None)
        elif isinstance(ev, ProcessExec):
            _on_exec(plan, evs, i, ev)
            continue
        else:
            runs.pop(tid, None)
            if isinstance(ev, ProcessFork):
                _on_fork(plan, pending, i, ev)
            elif isinstance(ev, SysEnter) and ev.name in _CLONES:
                pending[tid] = ev
            elif isinstance(ev, SysExit):
                plan.exits.add(ev.name)
        g = guesses.get(tid)
        if g is not None:
            _observe(plan, g, i, ev)
    for g in list(guesses.values()):
        _finish(plan, g)
    return plan


# --- resolving pass -----------------------------------------------------------------


def _fd(value: int) -> int:
    """The fd argument as the kernel's int (``0xffffffff`` is -1)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class _Resolver:
    """Per-task state of :func:`memory_ops`: thread groups, pending syscalls, brk."""

    __slots__ = ("brk", "exit_code", "file", "members", "pending", "plan", "tgid")

    def __init__(self, plan: _Plan, file: str | None) -> None:
        self.plan, self.file = plan, file
        self.tgid: dict[int, int] = {}  # tid -> thread-group id
        self.members: dict[int, set[int]] = {}  # thread-group id -> live tids
        self.pending: dict[int, SysEnter] = {}  # tid -> enter awaiting its exit
        self.brk: dict[int, int] = {}  # thread-group id -> current break
        self.exit_code: dict[int, int] = {}

    def pid(self, ev: Record) -> int:
        """The thread-group id of ``ev``'s task (the layout's, else the tracked one)."""
        tid = ev.tid
        p = self.tgid.get(tid)
        if p is None:  # a task first seen here: it was running before the trace began
            p = tid if ev.pid is None else ev.pid
            self.tgid[tid] = p
            self.members.setdefault(p, set()).add(tid)
        return p

    def skipped(self, ev: Record, reason: str) -> Skipped:
        return Skipped(ev.line, self.pid(ev), ev.tid, ev.comm, reason)

    def unfinished(self, tid: int) -> Skipped | None:
        enter = self.pending.pop(tid, None)
        if enter is None:
            return None
        return self.skipped(enter, f"sys_enter_{enter.name} never returned")

    def fork(self, i: int, ev: ProcessFork) -> Clone:
        syscall, flags, inferred, evidence = self.plan.forks[i]
        p = self.pid(ev)
        child = ev.child_pid
        cp = p if flags & CLONE_THREAD else child
        self.tgid[child] = cp
        self.members.setdefault(cp, set()).add(child)
        cls = Vfork if syscall == "vfork" else Clone
        return cls(ev.line, p, ev.tid, ev.comm, child, cp, flags, syscall, inferred, evidence)

    def exec(self, i: int, ev: ProcessExec, evs: Sequence[Event]) -> list[MemOp]:
        p, tid, old = self.pid(ev), ev.tid, ev.old_pid
        ops: list[MemOp] = [s for s in (self.unfinished(old),) if s is not None]
        if ev.pid is None and old != tid:  # in the tid-only layout, take the old tid's group
            p = self.tgid.get(old, p)
        for t in self.members.pop(p, set()) - {tid, old}:  # de_thread() killed them
            self.tgid.pop(t, None)
        self.tgid.pop(old, None)
        self.tgid[tid] = tid
        self.members[tid] = {tid}
        self.brk.pop(p, None)
        ops.append(Exec(ev.line, tid, tid, ev.comm, ev.filename, old))
        for j in self.plan.moved.get(i, ()):
            f = evs[j]
            assert isinstance(f, PageFault) and isinstance(f.address, int)
            ops.append(Fault(f.line, tid, tid, f.comm, f.address, f.error_code, True, f.ip))
        return ops

    def exit(self, ev: ProcessExit) -> list[MemOp]:
        p, tid = self.pid(ev), ev.tid
        ops: list[MemOp] = [s for s in (self.unfinished(tid),) if s is not None]
        live = self.members.get(p, set())
        live.discard(tid)
        self.tgid.pop(tid, None)
        dead = not live
        code = self.exit_code.get(p)
        if dead:
            self.members.pop(p, None)
            self.brk.pop(p, None)
            self.exit_code.pop(p, None)
        ops.append(Exit(ev.line, p, tid, ev.comm, dead, code))
        return ops

    def fault(self, ev: PageFault) -> MemOp:
        a = ev.address
        if not isinstance(a, int) or a >= X86_64_USER_END:
            return self.skipped(ev, "fault at a kernel address")
        return Fault(ev.line, self.pid(ev), ev.tid, ev.comm, a, ev.error_code, ev.kernel, ev.ip)

    def sys_enter(self, ev: SysEnter) -> MemOp | None:
        name = ev.name
        if name in _CLONES:  # folded into the Clone made at sched_process_fork
            return None
        if name == "exit_group":  # folded into the Exit records that follow
            self.exit_code[self.pid(ev)] = ev.args.get("error_code", 0) & 0xFF
            return None
        if name in self.plan.exits:
            prev = self.unfinished(ev.tid)
            self.pending[ev.tid] = ev
            return prev
        build = _ENTER_ONLY.get(name)
        if build is None:
            why = "has no traced exit" if name in PAIRED_SYSCALLS else "changes no user mapping"
            return self.skipped(ev, f"{name} {why}")
        return self.build(build, ev, ev, 0)

    def sys_exit(self, ev: SysExit) -> MemOp:
        enter = self.pending.get(ev.tid)
        if enter is None or enter.name != ev.name:
            return self.skipped(ev, f"sys_exit_{ev.name} without its sys_enter")
        del self.pending[ev.tid]
        build = _PAIRED.get(ev.name)
        if build is None:
            return self.skipped(ev, f"{ev.name} changes no user mapping")
        if ev.name != "brk" and -_MAX_ERRNO <= ev.ret < 0:
            return self.skipped(ev, f"{ev.name} failed with errno {-ev.ret}")
        return self.build(build, enter, ev, ev.ret)

    def build(self, build: _Build, enter: SysEnter, ev: Record, ret: int) -> MemOp:
        try:
            return build(self, enter, self.pid(ev), ret)
        except KeyError as err:
            raise InputError(
                f"sys_enter_{enter.name} has no {err.args[0]!r} argument",
                file=self.file,
                line=enter.line,
            ) from None


_Build = Callable[[_Resolver, SysEnter, int, int], MemOp]


def _mmap(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    a = e.args
    fd = _fd(a["fd"])
    return Mmap(
        e.line, p, e.tid, e.comm, ret, a["len"], a["prot"], a["flags"], fd, a["off"], a["addr"]
    )


def _munmap(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    return Munmap(e.line, p, e.tid, e.comm, e.args["addr"], e.args["len"])


def _mremap(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    a = e.args
    old, old_len, new_len = a["addr"], a["old_len"], a["new_len"]
    return Mremap(e.line, p, e.tid, e.comm, old, old_len, new_len, a["flags"], ret, a["new_addr"])


def _brk(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    old = r.brk.get(p)
    r.brk[p] = ret
    return Brk(e.line, p, e.tid, e.comm, e.args["brk"], old, ret)


def _mprotect(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    return Mprotect(e.line, p, e.tid, e.comm, e.args["start"], e.args["len"], e.args["prot"])


def _madvise(r: _Resolver, e: SysEnter, p: int, ret: int) -> MemOp:
    a = e.args
    return Madvise(e.line, p, e.tid, e.comm, a["start"], a["len_in"], a["behavior"])


_PAIRED: dict[str, _Build] = {
    "mmap": _mmap,
    "munmap": _munmap,
    "mremap": _mremap,
    "brk": _brk,
    "mprotect": _mprotect,
    "madvise": _madvise,
}
_ENTER_ONLY: dict[str, _Build] = {"munmap": _munmap, "mprotect": _mprotect, "madvise": _madvise}


def memory_ops(events: Iterable[Event], *, file: str | None = None) -> Iterator[MemOp]:
    """Resolve parsed records into the memory operations of each thread group.

    Rules (each one documented in docs/fidelity.md, "Trace recording and parsing"):

    - **Pairing.** A syscall whose exit the trace holds (mmap, munmap, mremap, brk as
      recorded) is paired with the next exit of the same tid and yielded at the exit,
      with the address the kernel returned; a failed call (-4095..-1) becomes
      :class:`Skipped`. mprotect and madvise (enter only) are yielded at the enter.
    - **Thread groups.** ``pid`` comes from the ``pid/tid`` header; in the tid-only
      layout it is tracked through clones and execs.
    - **Clones.** clone's flags are traced; vfork is CLONE_VM|CLONE_VFORK. clone3
      (and a fork with no traced syscall) is inferred from the child: it is a thread
      iff its records show another thread-group id than its own tid, or it execs as
      a non-leader; in the tid-only layout a child that never execs as a process
      leader is taken as a thread. A child that is a process shares the mm until it
      execs (posix_spawn: CLONE_VM|CLONE_VFORK) iff its parent produced no record
      between the fork and the child's exec (or exit): a vfork parent is frozen.
    - **Exec order.** The kernel-mode faults that build the new image (elf_load,
      create_elf_tables) precede ``sched_process_exec`` in the trace; they are
      yielded right after the :class:`Exec`, so they land in the new mm. They are the
      trailing run of that task's kernel-mode write faults on not-present pages.
    - **Exit.** ``group_dead`` is true on the last task of its group this trace has
      seen (the kernel's flag can precede another thread's exit record).
    - Everything else (unpaired records, failed calls, kernel-address faults, lost
      events, other tracepoints) is yielded as :class:`Skipped` with the reason.

    ``events`` is read twice (a planning pass looks ahead for clone3 and exec), so an
    iterator is first turned into a list. ``file`` names the trace in errors.
    """
    evs = events if isinstance(events, Sequence) else list(events)
    plan = _plan(evs)
    r = _Resolver(plan, file)
    skip = plan.skip
    for i, ev in enumerate(evs):
        if isinstance(ev, PageFault):
            if i not in skip:
                yield r.fault(ev)
        elif isinstance(ev, SysExit):
            yield r.sys_exit(ev)
        elif isinstance(ev, SysEnter):
            op = r.sys_enter(ev)
            if op is not None:
                yield op
        elif isinstance(ev, ProcessFork):
            yield r.fork(i, ev)
        elif isinstance(ev, ProcessExec):
            yield from r.exec(i, ev, evs)
        elif isinstance(ev, ProcessExit):
            yield from r.exit(ev)
        elif isinstance(ev, Lost):
            yield r.skipped(ev, f"perf lost {ev.count} events here: the trace is incomplete")
        else:
            yield r.skipped(ev, f"event {ev.event} is not modelled")
    for tid in list(r.pending):
        s = r.unfinished(tid)
        if s is not None:
            yield s


# --- summary ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """Counts over a trace: records and operations by kind, processes, skip reasons."""

    records: dict[str, int]
    ops: dict[str, int]
    processes: dict[int, str]  # thread-group id -> last comm seen
    skipped: dict[str, int]  # reason -> count


def summarize(events: Sequence[Event], *, file: str | None = None) -> TraceSummary:
    """Count what a parsed trace holds and what :func:`memory_ops` makes of it."""
    records: dict[str, int] = {}
    for ev in events:
        k = type(ev).__name__
        records[k] = records.get(k, 0) + 1
    ops: dict[str, int] = {}
    procs: dict[int, str] = {}
    skipped: dict[str, int] = {}
    for op in memory_ops(events, file=file):
        k = type(op).__name__
        ops[k] = ops.get(k, 0) + 1
        procs[op.pid] = op.comm
        if isinstance(op, Skipped):
            skipped[op.reason] = skipped.get(op.reason, 0) + 1
    return TraceSummary(records, ops, procs, skipped)
