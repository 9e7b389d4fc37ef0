"""User address-space benchmarks: simulated vs native page faults, fork and munmap.

Each figure is measured next to the native operation on this host in the same run:
native faults write one byte per page of fresh anonymous memory (ctypes mmap); native
fork forks a process holding 1 GiB touched; native munmap unmaps 1 GiB touched. The
output is a ratio; nothing is asserted (benchmarks are not tests). Targets (issue 4):
simulated faults/s >= native, fork and munmap within 2x of native time.

The model runs on the default machine (kpkeys_hardened_pgtables on, minimal allocator,
lazy-MMU batching on, PTE-mapped linear map). Its figures include everything the model
does per fault (MMU-checked accesses and walks, TLB fills, the guarded PTE write with
its two POR_EL1 writes and ISBs, clear_page through the linear map, the allocator).

Noise control (the host is a shared VM whose first touch of fresh memory costs a host
page fault of widely varying price): a warm-up touches and frees 1 GiB first, then
native and model runs alternate ``ROUNDS`` times and the best of each is kept. Before
each model run the previous run's machine is collected (``gc.collect()``, untimed):
a machine is a graph of reference cycles that would otherwise still hold its memory
while the next one runs.
"""

from __future__ import annotations

import ctypes
import gc
import mmap as pymmap
import os
import time

import numpy as np

from kpsim.machine import boot
from kpsim.mm.process import Process, mm_context

G, PAGE = 1 << 30, 4096
ROUNDS = 3
FAULT_BYTES = 64 << 20
LONE = 4000
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


def native_fork_and_munmap(size: int = G) -> tuple[float, float]:
    """Fork (child exits at once) and munmap of ``size`` bytes touched, on this host."""
    addr = _native_map(size)
    _native_touch(addr, size)
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    fork_s = time.perf_counter() - t
    os.waitpid(pid, 0)
    t = time.perf_counter()
    _libc.munmap(addr, size)
    return fork_s, time.perf_counter() - t


def sim_faults() -> tuple[float, float]:
    """(faults/s touching a range, faults/s of lone touches one address at a time)."""
    gc.collect()  # the previous round's machine (reference cycles) goes first, untimed
    m = boot(memory="4G", cpus=2)
    p = Process.create(mm_context(m.k, m.arch))
    a = p.mmap(None, FAULT_BYTES, 3)
    t = time.perf_counter()
    p.touch_range(a, FAULT_BYTES, PAGE, write=True)
    bulk = (FAULT_BYTES // PAGE) / (time.perf_counter() - t)
    b = p.mmap(None, 2 * LONE * PAGE, 3)
    addrs = range(b, b + 2 * LONE * PAGE, 2 * PAGE)  # no two in a row: no batching
    p.touch(b, write=True)  # tables made
    t = time.perf_counter()
    for x in addrs[1:]:
        p.touch(x, write=True)
    lone = (len(addrs) - 1) / (time.perf_counter() - t)
    p.exit()
    return bulk, lone


def sim_fork_and_munmap() -> tuple[float, float]:
    gc.collect()
    m = boot(memory="4G", cpus=2)
    p = Process.create(mm_context(m.k, m.arch))
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
    return fork_s, munmap_s


def warm_up() -> None:
    """Touch and free 1 GiB so that neither side pays first-ever host faults."""
    w = np.ones(G // 8, dtype=np.uint64)
    del w


def main() -> dict[str, float]:
    warm_up()
    nat_f, nat_fork, nat_unmap = 0.0, float("inf"), float("inf")
    sim_f, sim_lone, sim_fork, sim_unmap = 0.0, 0.0, float("inf"), float("inf")
    for _ in range(ROUNDS):
        nat_f = max(nat_f, native_faults(FAULT_BYTES))
        bulk, lone = sim_faults()
        sim_f, sim_lone = max(sim_f, bulk), max(sim_lone, lone)
        f, u = native_fork_and_munmap()
        nat_fork, nat_unmap = min(nat_fork, f), min(nat_unmap, u)
        f, u = sim_fork_and_munmap()
        sim_fork, sim_unmap = min(sim_fork, f), min(sim_unmap, u)
    print(f"best of {ROUNDS} alternating rounds; default machine (kpkeys on, batching on)")
    print(f"page faults/s (range)  sim {sim_f:12.0f}   native {nat_f:12.0f}   "
          f"sim/native {sim_f / nat_f:8.3f}   (target >= 1)")  # fmt: skip
    print(f"page faults/s (lone)   sim {sim_lone:12.0f}   "
          f"{1e6 / sim_lone:6.2f} us/fault   (one at a time, as replay)")  # fmt: skip
    print(f"fork 1G touched        sim {sim_fork:10.3f} s   native {nat_fork:10.4f} s   "
          f"sim/native {sim_fork / nat_fork:8.2f}x   (target <= 2x)")  # fmt: skip
    print(f"munmap 1G touched      sim {sim_unmap:10.3f} s   native {nat_unmap:10.4f} s   "
          f"sim/native {sim_unmap / nat_unmap:8.2f}x   (target <= 2x)")  # fmt: skip
    return {
        "range faults, sim/native (issue 14: >= 2)": sim_f / nat_f,
        "lone fault, us (issue 14: <= 4)": 1e6 / sim_lone,
        "fork 1G, sim/native (issue 14: <= 1)": sim_fork / nat_fork,
        "munmap 1G, sim/native (issue 14: <= 1)": sim_unmap / nat_unmap,
    }


if __name__ == "__main__":
    main()
