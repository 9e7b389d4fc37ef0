"""User address-space benchmarks: simulated vs native page faults, fork and munmap.

Each figure is measured next to the native operation on this host in the same run:
native faults write one byte per page of fresh anonymous memory (ctypes mmap); native
fork forks a process holding 1 GiB touched; native munmap unmaps 1 GiB touched. The
output is a ratio; nothing is asserted (benchmarks are not tests).
"""

from __future__ import annotations

import ctypes
import mmap as pymmap
import os
import time

from kpsim.machine import boot
from kpsim.mm.process import Process, mm_context

G, PAGE = 1 << 30, 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _native_map(length: int) -> int:
    prot = pymmap.PROT_READ | pymmap.PROT_WRITE
    addr = _libc.mmap(None, length, prot, pymmap.MAP_PRIVATE | pymmap.MAP_ANONYMOUS, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    return int(addr)


def _native_touch(addr: int, length: int) -> None:
    buf = (ctypes.c_char * length).from_address(addr)
    mv = memoryview(buf).cast("B")
    mv[::PAGE] = b"\x01" * (length // PAGE)  # one byte per page, in C


def native_faults(length: int) -> float:
    addr = _native_map(length)
    t = time.perf_counter()
    _native_touch(addr, length)
    dt = time.perf_counter() - t
    _libc.munmap(addr, length)
    return (length // PAGE) / dt


def native_fork_and_munmap() -> tuple[float, float]:
    addr = _native_map(G)
    _native_touch(addr, G)
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    fork_s = time.perf_counter() - t
    os.waitpid(pid, 0)
    t = time.perf_counter()
    _libc.munmap(addr, G)
    return fork_s, time.perf_counter() - t


def sim_runs() -> dict[str, float]:
    m = boot(memory="4G", cpus=2)
    mm_context(m.k, m.arch)
    p = Process.create(m)
    n = 32 << 20
    a = p.mmap(None, n, 3)
    t = time.perf_counter()
    p.touch_range(a, n, PAGE, write=True)
    faults = (n // PAGE) / (time.perf_counter() - t)
    b = p.mmap(None, G, 3)
    p.touch_range(b, G, PAGE, write=True)
    t = time.perf_counter()
    c = p.fork()
    fork_s = time.perf_counter() - t
    c.exit()
    t = time.perf_counter()
    p.munmap(b, G)
    munmap_s = time.perf_counter() - t
    p.exit()
    return {"faults": faults, "fork": fork_s, "munmap": munmap_s}


def main() -> None:
    nat_faults = native_faults(256 << 20)
    nat_fork, nat_munmap = native_fork_and_munmap()
    sim = sim_runs()
    print(f"page faults/s     sim {sim['faults']:12.0f}   native {nat_faults:12.0f}   "
          f"sim/native {sim['faults'] / nat_faults:8.4f}")  # fmt: skip
    print(f"fork 1G touched   sim {sim['fork']:10.3f} s   native {nat_fork:10.4f} s   "
          f"sim/native {sim['fork'] / nat_fork:8.1f}x")  # fmt: skip
    print(f"munmap 1G touched sim {sim['munmap']:10.3f} s   native {nat_munmap:10.4f} s   "
          f"sim/native {sim['munmap'] / nat_munmap:8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
