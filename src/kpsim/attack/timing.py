"""When the attacker's write happens, relative to legitimate page-table writers.

The kpkeys guard opens write access to pkey 1 on the *current CPU only*
(``kpkeys_set_context`` writes that CPU's POR_EL1, or IA32_PKRS on x86; spec §1, §3.4):
another CPU's open guard or batched lazy-MMU section (``arch_enter_lazy_mmu_mode``,
spec §4.9) must not help an attacker on this one. Exception entry resets the register
to the default context (spec §3.6; x86: ``pks_save_pt_regs``), so an interrupt taken
inside a guard runs restricted. Timings:

- ``rest``: nothing open anywhere;
- ``other_guard`` / ``other_lazy_mmu``: the other CPU holds a guard / a batched
  section open while the attacker's CPU writes;
- ``other_busy`` (see :func:`busy_windows`): the other CPU runs real page-table work
  (user faults, munmap, vmalloc/vfree) and the attacker writes at every moment the
  machine offers (the ``irq_hook`` that fires after each page-table write);
- ``own_irq``: the attacker's CPU is inside a guard and the write runs in an interrupt
  handler taken there (control flow intact: in the threat model);
- ``own_guard`` / ``own_lazy_mmu``: the write is made by the code that holds the guard
  or section on the attacker's CPU; that needs control of the guarded code, which
  the threat model excludes, so these are reported apart, never as a defence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kpsim.attack.ops import ops_for
from kpsim.kpkeys.context import kpkeys_guard
from kpsim.mm.kpkeys_defs import KPKEYS_CTX_PGTABLES
from kpsim.mm.mmap import PROT_READ, PROT_WRITE
from kpsim.mm.process import Process
from kpsim.mm.vmalloc import vfree, vmalloc

Write = Callable[[], Any]  # the store: its fault, or None if it landed


def pgtables_writable(arch: Any, cpu_id: int) -> bool:
    """Does ``cpu_id``'s pkey register grant write to ``KPKEYS_PKEY_PGTABLES`` now
    (arm64: POR_EL1 in effect; x86: IA32_PKRS)?"""
    return ops_for(arch).pgtables_writable(arch.system.cpus[cpu_id])


@contextmanager
def _lazy_mmu(arch: Any) -> Iterator[None]:
    arch.arch_enter_lazy_mmu_mode()
    try:
        yield
    finally:
        arch.arch_leave_lazy_mmu_mode()


@contextmanager
def _opened(arch: Any, cpu_id: int, kind: str) -> Iterator[None]:
    """Open a guard (``kind`` "guard") or a lazy-MMU section on ``cpu_id``."""
    with arch.on_cpu(cpu_id):
        if kind == "guard":
            with kpkeys_guard(arch, KPKEYS_CTX_PGTABLES):
                yield
        else:
            with _lazy_mmu(arch):
                yield


def write_at(arch: Any, timing: str, a: int, b: int | None, write: Write) -> tuple[Any, bool]:
    """Run the attacker's ``write`` from CPU ``a`` at ``timing``; return its fault (or
    None if it landed) and whether a pkey-1 write window was open on the CPU concerned."""
    if timing == "rest":
        with arch.on_cpu(a):
            return write(), False
    if timing in ("other_guard", "other_lazy_mmu"):
        assert b is not None
        with _opened(arch, b, timing.removeprefix("other_")):
            window = pgtables_writable(arch, b)
            with arch.on_cpu(a):
                return write(), window
    kind = "guard" if timing in ("own_guard", "own_irq") else "lazy_mmu"
    with _opened(arch, a, kind):
        window = pgtables_writable(arch, a)
        if timing == "own_irq":
            return arch.interrupt(a, write), window
        return write(), window


def busy_windows(
    arch: Any, worker: Process, vmalloc_k: Any, attempts: int, attack: Callable[[bool], None]
) -> int:
    """Run page-table work on the worker's CPU; after each of its page-table writes,
    call ``attack(window_open)`` until ``attempts`` calls were made. Returns the calls."""
    done = 0
    b = worker.cpu

    def hook() -> None:
        nonlocal done
        if done < attempts:
            done += 1
            attack(pgtables_writable(arch, b))

    prev = arch.irq_hook
    arch.irq_hook = hook
    try:
        for _ in range(1000):
            if done >= attempts:
                break
            _busy_round(arch, worker, vmalloc_k)
    finally:
        arch.irq_hook = prev
    return done


def _busy_round(arch: Any, worker: Process, k: Any) -> None:
    """User faults, a munmap (zap in a lazy-MMU section), a vmalloc and a vfree."""
    size = 32 << 12
    addr = worker.mmap(None, size, PROT_READ | PROT_WRITE)
    worker.touch_range(addr, size, write=True)
    worker.munmap(addr, size)
    with arch.on_cpu(worker.cpu):
        va = vmalloc(k, 8 << 12)
        vfree(k, va)
