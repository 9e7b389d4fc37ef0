"""The host side of ``kpsim conform``: steps run on the real Linux kernel.

:class:`HostTarget` is a :class:`kpsim.workloads.steps.StepTarget` backed by a child
Python process that performs each step with ctypes (libc ``mmap``, ``munmap``,
``mprotect``, ``madvise``, ``mremap``, byte loads and stores, ``os.fork``) and then
blocks reading its command pipe. The parent reads the child's ``VmPTE`` from
``/proc/PID/status`` only while the child is quiescent, following
``pt-lifecycle.md`` §5: blocked in ``read()`` (state ``S`` and ``/proc/PID/syscall``
showing ``read`` for 3 polls 20 ms apart) or stopped with ``SIGSTOP``; ``VmPTE`` is
read before and after and the sample is kept only if both agree.

Also here, for ``kpsim.workloads.snapshot``: the ``/proc`` readers and the
quiescence guard. File-backed steps map a fresh memfd (shmem). Left out: threads in
the child, files on disk (their large folios may be PMD-mapped), hugetlbfs,
and architectures whose ``mmap`` flag values differ from the generic ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kpsim.errors import KpsimError

PAGE = 4096

# Linux UAPI values shared by x86_64, arm64 and riscv64 (asm-generic/mman-common.h).
PROT_BITS = {"r": 0x1, "w": 0x2, "x": 0x4}
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FLAG_BITS = {
    "fixed": MAP_FIXED,
    "fixed_noreplace": 0x100000,
    "noreserve": 0x4000,
    "populate": 0x8000,
}
MADV_BITS = {
    "dontneed": 4,
    "dontfork": 10,
    "dofork": 11,
    "hugepage": 14,
    "nohugepage": 15,
    "wipeonfork": 18,
    "keeponfork": 19,
}
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
#: ``read``'s syscall number, as ``/proc/PID/syscall`` shows it (pt-lifecycle.md §5).
READ_SYSCALL = {"x86_64": 0, "aarch64": 63, "riscv64": 63}
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")

_POLLS, _POLL_INTERVAL, _QUIESCE_TIMEOUT = 3, 0.02, 10.0


class HostUnavailable(KpsimError, RuntimeError):
    """The host cannot answer: not Linux, no ``/proc``, or an unsupported machine."""


class HostError(KpsimError, RuntimeError):
    """The host side failed: the child died, or no quiescent sample could be taken."""


# ------------------------------------------------------------------ the host


def check_host() -> None:
    """Raise :class:`HostUnavailable` with the reason unless the host can answer."""
    if not sys.platform.startswith("linux"):
        raise HostUnavailable(f"the host is not Linux (platform {sys.platform!r})")
    machine = platform.machine()
    if machine not in READ_SYSCALL:
        raise HostUnavailable(
            f"host architecture {machine!r} is not supported (need x86_64, aarch64 or riscv64)"
        )
    if os.sysconf("SC_PAGE_SIZE") != PAGE:
        raise HostUnavailable("the host's page size is not 4 KiB")
    try:
        vmpte_pages(os.getpid())
    except (OSError, HostError) as err:
        raise HostUnavailable(f"/proc cannot answer: {err}") from None


def thp_mode() -> str | None:
    """The bracketed word of ``transparent_hugepage/enabled`` (always, madvise, never)."""
    try:
        text = THP_ENABLED.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def thp_use_zero_page() -> bool | None:
    """``transparent_hugepage/use_zero_page``: THP read faults map the huge zero page."""
    try:
        return THP_ENABLED.with_name("use_zero_page").read_text().strip() == "1"
    except OSError:
        return None


def kernel_option(name: str) -> str | None:
    """``y``/``m``/``n`` for ``CONFIG_<name>`` from ``/proc/config.gz``, None if unknown."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith(f"CONFIG_{name}="):
                    return line.split("=", 1)[1].strip()
                if line.strip() == f"# CONFIG_{name} is not set":
                    return "n"
    except OSError:
        return None
    return "n"


def host_description() -> dict[str, str | None]:
    """What the comparison ran on: kernel, machine, THP mode, PT_RECLAIM."""
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "thp": thp_mode(),
        "pt_reclaim": kernel_option("PT_RECLAIM"),
    }


# ------------------------------------------------------------------- /proc


def vmpte_pages(pid: int) -> int:
    """``VmPTE`` of ``pid`` in 4 KiB pages (PTE + PMD + PUD tables)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise HostError(f"process {pid} does not exist") from None
    for line in text.splitlines():
        if line.startswith("VmPTE:"):
            kib = int(line.split()[1])
            return kib * 1024 // PAGE
    raise HostError(f"process {pid} has no VmPTE (a kernel thread, or exiting)")


def proc_state(pid: int, tid: int | None = None) -> str:
    """The one-letter state of ``pid`` (or of its thread ``tid``)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise HostError(f"process {pid} does not exist") from None
    return text[text.rindex(")") + 2]


def proc_syscall(pid: int, tid: int | None = None) -> str | None:
    """``/proc/PID/syscall`` (syscall number and arguments), None if unreadable."""
    path = f"/proc/{pid}/syscall" if tid is None else f"/proc/{pid}/task/{tid}/syscall"
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _task_ids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise HostError(f"process {pid} does not exist") from None


def _blocked_signature(pid: int, read_nr: int | None) -> tuple[str, ...] | None:
    """Every thread's state and syscall, or None unless all are blocked or stopped."""
    sig: list[str] = []
    for tid in _task_ids(pid):
        state = proc_state(pid, tid)
        if state in "Tt":
            sig.append(f"{tid} {state}")
            continue
        call = proc_syscall(pid, tid)
        if state != "S" or call is None or call == "running" or call.startswith("-1"):
            return None
        if read_nr is not None and call.split()[0] != str(read_nr):
            return None
        sig.append(f"{tid} {state} {call}")
    return tuple(sig)


def wait_blocked(
    pid: int, *, read_nr: int | None = None, timeout: float = _QUIESCE_TIMEOUT
) -> bool:
    """Wait until ``pid`` shows the same blocked state for 3 polls 20 ms apart.

    With ``read_nr`` the thread must be blocked in that syscall (``read``). False
    if that does not happen within ``timeout`` or ``/proc/PID/syscall`` is unreadable.
    """
    if proc_syscall(pid) is None:
        return False
    deadline = time.monotonic() + timeout
    last: tuple[str, ...] | None = None
    same = 0
    while time.monotonic() < deadline:
        sig = _blocked_signature(pid, read_nr)
        same = same + 1 if sig is not None and sig == last else (1 if sig is not None else 0)
        if same >= _POLLS:
            return True
        last = sig
        time.sleep(_POLL_INTERVAL)
    return False


@contextlib.contextmanager
def quiescent(pid: int, *, read_nr: int | None = None, may_stop: bool = True) -> Iterator[str]:
    """Hold ``pid`` unable to fault for the duration; yields ``blocked`` or ``stopped``.

    Prefers a process already blocked (no signal sent); otherwise, when allowed and
    permitted, stops it with ``SIGSTOP`` and continues it afterwards.
    """
    if wait_blocked(pid, read_nr=read_nr, timeout=1.0 if read_nr is None else _QUIESCE_TIMEOUT):
        yield "blocked"
        return
    if not may_stop:
        raise HostError(f"process {pid} is not quiescent (not blocked, and may not be stopped)")
    try:
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        raise HostError(f"process {pid} is not quiescent and kpsim may not stop it") from None
    try:
        _wait_stopped(pid)
        yield "stopped"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + _QUIESCE_TIMEOUT
    while time.monotonic() < deadline:
        if all(proc_state(pid, tid) in "Tt" for tid in _task_ids(pid)):
            return
        time.sleep(_POLL_INTERVAL / 4)
    raise HostError(f"process {pid} did not stop within {_QUIESCE_TIMEOUT:.0f} s")


def measure_vmpte(pid: int, *, read_nr: int | None = None, attempts: int = 5) -> int:
    """``VmPTE/4`` of a quiescent ``pid``, read before and after a pause, equal."""
    for _ in range(attempts):
        with quiescent(pid, read_nr=read_nr):
            before = vmpte_pages(pid)
            time.sleep(_POLL_INTERVAL)
            after = vmpte_pages(pid)
        if before == after:
            return after
    raise HostError(f"VmPTE of process {pid} kept changing while it was quiescent")


# ------------------------------------------------------------------ the target


def _prot_bits(prot: str) -> int:
    return 0 if prot == "none" else sum(PROT_BITS[c] for c in prot)


def _map_bits(flags: frozenset[str]) -> int:
    bits = MAP_ANONYMOUS | (MAP_SHARED if "shared" in flags else MAP_PRIVATE)
    return bits | sum(MAP_FLAG_BITS[f] for f in flags if f in MAP_FLAG_BITS)


_CHILD_BOOT = "from kpsim.workloads.host import child_main; child_main()"


class HostTarget:
    """Steps on the host kernel, performed by a child process (a StepTarget)."""

    __slots__ = ("_proc", "_read_nr", "children", "description")

    def __init__(self, *, python: str | None = None) -> None:
        check_host()
        self.description = host_description()
        self._read_nr = READ_SYSCALL[platform.machine()]
        self.children: list[int] = []
        src = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [python or sys.executable, "-c", _CHILD_BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._call("hello")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def __enter__(self) -> HostTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, command: str) -> int:
        """Send one command line; return the child's number or raise its errno."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()
            reply = proc.stdout.readline().split()
        except BrokenPipeError:
            reply = []
        if not reply:
            raise HostError(f"the host child died during {command.split()[0]!r}: {self._death()}")
        if reply[0] == b"err":
            errno = int(reply[1])
            raise OSError(errno, os.strerror(errno))
        return int(reply[1])

    def _death(self) -> str:
        code = self._proc.wait()
        err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return f"{how}{': ' + err.splitlines()[-1] if err else ''}"

    def mmap(self, addr: int | None, length: int, prot: str, flags: frozenset[str]) -> int:
        bits = _map_bits(flags)
        op = "mmap"
        if "file" in flags:
            op, bits = "mmapf", bits & ~MAP_ANONYMOUS
        return self._call(f"{op} {addr or 0} {length} {_prot_bits(prot)} {bits}")

    def touch(self, addr: int, length: int, stride: int, write: bool) -> None:
        self._call(f"touch {addr} {length} {stride} {int(write)}")

    def munmap(self, addr: int, length: int) -> None:
        self._call(f"munmap {addr} {length}")

    def mprotect(self, addr: int, length: int, prot: str) -> None:
        self._call(f"mprotect {addr} {length} {_prot_bits(prot)}")

    def madvise(self, addr: int, length: int, advice: str) -> None:
        self._call(f"madvise {addr} {length} {MADV_BITS[advice]}")

    def mremap(self, old_addr: int, old_len: int, new_len: int, new_addr: int | None) -> int:
        flags = MREMAP_MAYMOVE | (0 if new_addr is None else MREMAP_FIXED)
        return self._call(f"mremap {old_addr} {old_len} {new_len} {flags} {new_addr or 0}")

    def brk(self, delta: int) -> int:
        return self._call(f"brk {delta}")

    def fork(self) -> int:
        child = self._call("fork")
        self.children.append(child)
        return measure_vmpte(child, read_nr=self._read_nr)

    def pt_pages(self) -> int:
        return measure_vmpte(self._proc.pid, read_nr=self._read_nr)

    def close(self) -> None:
        """End the child and its forked children (they exit when their pipe closes)."""
        proc = self._proc
        if proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert proc.stdin is not None
                proc.stdin.write(b"quit\n")
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# ------------------------------------------------------------------- the child


class _Child:
    """The child's side: performs commands with libc; keeps forked children parked."""

    __slots__ = ("brk_end", "libc", "parked", "pipes")

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        vp, sz, i, lng = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_long
        libc.mmap.argtypes = [vp, sz, i, i, i, lng]
        libc.mmap.restype = vp
        libc.mremap.argtypes = [vp, sz, sz, i, vp]
        libc.mremap.restype = vp
        for name, extra in (("munmap", []), ("mprotect", [i]), ("madvise", [i])):
            getattr(libc, name).argtypes = [vp, sz, *extra]
            getattr(libc, name).restype = i
        libc.sbrk.argtypes = [ctypes.c_ssize_t]
        libc.sbrk.restype = vp
        libc.mallopt.argtypes = [i, i]
        libc.malloc.argtypes = [sz]
        libc.malloc.restype = vp
        libc.free.argtypes = [vp]
        # M_TOP_PAD 64 MiB: malloc's heap keeps that much room at its top, so it does
        # not move the break again while brk steps do; a malloc of more than the top
        # chunk (below the mmap threshold) makes it take effect now.
        libc.mallopt(-2, 64 << 20)
        libc.free(libc.malloc(120 << 10))
        libc.prctl.argtypes = [i, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the parent
        self.libc = libc
        self.pipes: list[int] = []
        self.parked: list[int] = []
        self.brk_end: int | None = None

    @staticmethod
    def _check(result: int | None, failed: int) -> int:
        if result == failed:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return result or 0

    def do(self, words: list[str]) -> int:
        op, a = words[0], [int(w) for w in words[1:]]
        libc = self.libc
        if op == "hello":
            return os.getpid()
        if op == "mmap":
            return self._check(libc.mmap(a[0] or None, a[1], a[2], a[3], -1, 0), (1 << 64) - 1)
        if op == "mmapf":  # a fresh memfd of the mapping's length, closed once mapped
            fd = os.memfd_create("kpsim-conform", 0)
            try:
                os.ftruncate(fd, a[1])
                return self._check(libc.mmap(a[0] or None, a[1], a[2], a[3], fd, 0), (1 << 64) - 1)
            finally:
                os.close(fd)
        if op == "mremap":
            return self._check(libc.mremap(a[0], a[1], a[2], a[3], a[4] or None), (1 << 64) - 1)
        if op in ("munmap", "mprotect", "madvise"):
            return self._check(getattr(libc, op)(*a), -1)
        if op == "touch":
            self.touch(*a)
            return 0
        if op == "brk":
            return self.brk(a[0])
        if op == "fork":
            return self.fork()
        raise OSError(22, f"unknown command {op!r}")

    @staticmethod
    def touch(addr: int, length: int, stride: int, write: int) -> None:
        """One byte at every stride; a dense aligned write is one memset."""
        if write and stride == PAGE and addr % PAGE == 0:
            ctypes.memset(addr, 1, length)
            return
        for at in range(addr, addr + length, stride):
            if write:
                ctypes.memset(at, 1, 1)
            else:
                ctypes.string_at(at, 1)

    def brk(self, delta: int) -> int:
        """Move the break with libc's ``sbrk`` (which keeps malloc's idea of it); return
        the old break. Shrinking is refused unless the break is still where the last
        ``brk`` step left it (malloc did not extend the heap in between)."""
        libc = self.libc
        cur = libc.sbrk(0) or 0
        if self.brk_end is not None and cur != self.brk_end:
            raise OSError(16, "the heap moved under the steps")  # EBUSY
        old = self._check(libc.sbrk(delta), (1 << 64) - 1)
        self.brk_end = old + delta
        return old

    def fork(self) -> int:
        """Fork a child that blocks reading a pipe until this process closes it."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the forked child: do nothing that could fault, then wait
            try:
                for fd in (w, 0, 1, *self.pipes):
                    os.close(fd)
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        self.pipes.append(w)
        self.parked.append(pid)
        return pid

    def finish(self) -> None:
        for fd in self.pipes:
            os.close(fd)
        for pid in self.parked:
            os.waitpid(pid, 0)


def child_main() -> None:
    """The child process's loop: one command per line in, ``ok N``/``err E`` out."""
    child = _Child()
    if os.getppid() == 1:
        return
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = inp.readline()
        if not line or line.strip() == b"quit":
            break
        try:
            reply = f"ok {child.do(line.decode().split())}\n"
        except OSError as err:
            reply = f"err {err.errno}\n"
        out.write(reply.encode())
        out.flush()
    child.finish()
