"""kernbench: a kernel-build-like process mix (mmtests kernbench; spec §7.1).

A ``make -j jobs`` parent spawns ``processes`` compiler runs, dealt round-robin over
the CPUs. Each run drives the paths a compiler's life drives in Linux:

1. ``fork()`` of make (``dup_mm``: make's tables copied, its anonymous pages COW);
2. ``execve("cc1")`` (``begin_new_exec`` -> ``exec_mmap``: the copy is torn down by
   ``exit_mmap``, a fresh mm with a stack);
3. the dynamic loader maps the binary and its libraries (file mappings: ``r-x`` text
   and a private ``rw-`` data segment each), reads text (file read faults, page-cache
   pages shared by every run) and writes data (``do_cow_fault``);
4. the heap grows with ``brk`` in steps and is written (anonymous faults), a scratch
   ``mmap`` is used and unmapped;
5. one run in ``helper_every`` forks a helper (the assembler) that execs, faults a
   little and exits;
6. ``exit()`` (``exit_mmap``: zap everything, free every table).

User-space work is not simulated instruction by instruction: each run adds
``user_cycles`` to the ``other_cycles`` counter (1 cycle each in the cost model), the
same with the feature on and off, so that the real/system/user split of the published
rows can be formed from the counts (system time = every other event). The file
system calls a compiler makes (``openat``, ``newfstatat``, ``read``: a few thousand per
translation unit) touch no page table and are not modelled; each run counts
``file_syscalls`` of them as ``syscall`` events, priced by the cost model, so that the
system time has the part the hardening does not slow down.

Departures: CPUs are used one after another (no concurrency, no lock contention, no
scheduler costs beyond ``switch_to``); file pages are never written back or reclaimed;
the page cache is warm after the first run (as after kernbench's warm-up build).
"""

from __future__ import annotations

import random
from typing import Any

from kpsim.machine.boot import Machine
from kpsim.mm import mmap as mmap_mod
from kpsim.mm.mm_types import FileRef
from kpsim.mm.process import Process
from kpsim.workloads.base import ParamSpec, WorkloadDef, count, measured

PAGE = 4096
RW = mmap_mod.PROT_READ | mmap_mod.PROT_WRITE
RX = mmap_mod.PROT_READ | mmap_mod.PROT_EXEC
#: (name, text bytes, data bytes, text pages read per run): cc1, libc, libm, ld.so...
LIBS = (
    ("cc1", 24 << 20, 1 << 20, 600),
    ("libc.so.6", 1536 << 10, 64 << 10, 120),
    ("libm.so.6", 512 << 10, 16 << 10, 24),
    ("libstdc++.so", 2 << 20, 96 << 10, 60),
    ("ld-linux.so", 192 << 10, 16 << 10, 30),
)


def _map_libs(p: Process, files: dict[str, FileRef], rng: random.Random) -> None:
    for name, text, data, reads in LIBS:
        f = files[name]
        base = p.mmap(None, text, RX, mmap_mod.MAP_PRIVATE, file=f)
        dbase = p.mmap(None, data, RW, mmap_mod.MAP_PRIVATE, file=f, pgoff=text // PAGE)
        for pg in rng.sample(range(text // PAGE), min(reads, text // PAGE)):
            p.touch(base + pg * PAGE)
        p.touch_range(dbase, data, write=True)


def _compile(make: Process, files: dict[str, FileRef], params: dict[str, Any],
             rng: random.Random, cpu: int, helper: bool) -> None:  # fmt: skip
    m_heap = int(params["heap"])
    child = make.fork(cpu=cpu)
    child.run(cpu)
    child.exec("cc1")
    _map_libs(child, files, rng)
    start = child.mm.brk
    step = 256 << 10
    for top in range(start + step, start + m_heap + step, step):
        child.brk(top)
        child.touch_range(top - step, step, write=True)
    scratch = child.mmap(None, 512 << 10, RW)
    child.touch_range(scratch, 512 << 10, write=True)
    child.munmap(scratch, 512 << 10)
    if helper:
        asm = child.fork()
        asm.exec("as")
        _map_libs(asm, {**files, "cc1": files["as"]}, rng)
        asm.exit()
    child.exit()


def run(m: Machine, params: dict[str, Any], rng: random.Random) -> None:
    """``processes`` compiler runs spread over ``jobs`` CPUs, all measured."""
    cpus = len(m.hw.cpus)
    jobs = int(params["jobs"]) or cpus
    make = Process.create(m, "make")
    ctx = make.ctx
    files = {name: ctx.new_file(text + data) for name, text, data, _ in LIBS}
    files["as"] = ctx.new_file(LIBS[0][1] + LIBS[0][2])
    make_heap = make.mm.brk
    make.brk(make_heap + (4 << 20))  # make's own state, copied by every fork
    make.touch_range(make_heap, 4 << 20, write=True)
    every = int(params["helper_every"])
    with measured(m):
        for i in range(int(params["processes"])):
            cpu = i % min(jobs, cpus)
            _compile(make, files, params, rng, cpu, helper=every > 0 and i % every == 0)
            count(m, "other_cycles", int(params["user_cycles"]))
            count(m, "syscall", int(params["file_syscalls"]))
    make.exit()


DEFS = (
    WorkloadDef(
        "kernbench",
        "make -j: short-lived compiler processes that exec, map libraries, fault, brk, "
        "fork helpers and exit, spread over the CPUs",
        (
            ParamSpec("jobs", "int", 0, min=0, max=64, doc="parallel jobs (0: one per CPU)"),
            ParamSpec("processes", "int", 8, min=1, max=100_000, doc="compiler runs"),
            ParamSpec("heap", "size", "2M", min=0, max=1 << 30, doc="heap each run grows"),
            ParamSpec("helper_every", "int", 4, min=0,
                      doc="fork+exec a helper every N runs (0: never)"),
            ParamSpec("user_cycles", "int", 20_000_000, min=0,
                      doc="user-space cycles per compiler run (counted as other_cycles)"),
            ParamSpec("file_syscalls", "int", 3000, min=0,
                      doc="file system calls per compiler run (open, stat, read...: `syscall`)"),
        ),
        run,
    ),
)  # fmt: skip
