"""arm64 kpkeys hooks: POR_EL1 contexts, exception entry/return, context switch.

Models ``arch/arm64/include/asm/kpkeys.h`` and ``asm/por.h`` (v7 naming, and the
enter/leave form of the linux-mm mirror after the review of v8 01/24) and the v4+
entry and context-switch patches (spec §3.3, §3.6):

- ``por_set_kpkeys_context``: pkey 0 RWX in every context, pkey 1 RW in
  ``KPKEYS_CTX_PGTABLES`` and R otherwise; other fields untouched.
- ``arch_kpkeys_set_context``: read, compute, write POR_EL1, ISB; return the previous
  value (v4-v8). With ``skip_unchanged`` it is ``arch_kpkeys_enter_context``: when the
  new value equals the current one nothing is written, no ISB, and the result is
  ``KPKEYS_PKEY_REG_INVAL`` (``entered_context = false``), which makes the matching
  restore (``arch_kpkeys_leave_context``) a no-op.
- exception entry saves POR_EL1 in the frame and resets it to ``POR_EL1_INIT`` (+ ISB)
  only if it differs; exception return writes the saved value back (ERET synchronises):
  always (v4-v8), or only when entry reset it (enter-leave).
- context switch saves the live value in the outgoing thread and writes the incoming
  one (+ ISB) only if it differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpsim.arch.generic.kpkeys import kpkeys_check_context
from kpsim.hw.arm64.cpu import Cpu
from kpsim.hw.arm64.por import POE_R, POE_RW, POE_RWX, por_elx_set_pkey_perms
from kpsim.mm.kpkeys_defs import (
    KPKEYS_CTX_DEFAULT,
    KPKEYS_CTX_PGTABLES,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    KPKEYS_PKEY_REG_INVAL,
)

POR_EL0_INIT = POE_RWX
POR_EL1_INIT_BASE = POE_RWX  # before the page-table feature: 0x7


_CTX_VALUES: dict[tuple[int, int], int] = {}


def por_set_kpkeys_context(por: int, ctx: int) -> int:
    """The register value for ``ctx``, keeping fields kpkeys does not manage (a pure
    function of its arguments, computed once per pair)."""
    v = _CTX_VALUES.get((por, ctx))
    if v is None:
        v = por_elx_set_pkey_perms(por, KPKEYS_PKEY_DEFAULT, POE_RWX)
        perm = POE_RW if ctx == KPKEYS_CTX_PGTABLES else POE_R
        v = por_elx_set_pkey_perms(v, KPKEYS_PKEY_PGTABLES, perm)
        if len(_CTX_VALUES) > 4096:
            _CTX_VALUES.clear()
        _CTX_VALUES[(por, ctx)] = v
    return v


def por_el1_init(hardened_pgtables: bool) -> int:
    """``POR_EL1_INIT``: 0x17 when CONFIG_KPKEYS_HARDENED_PGTABLES is built in, else 0x7."""
    if hardened_pgtables:
        return por_set_kpkeys_context(POR_EL1_INIT_BASE, KPKEYS_CTX_DEFAULT)
    return POR_EL1_INIT_BASE


@dataclass(slots=True)
class ThreadStruct:
    """The arm64 ``thread_struct`` fields kpkeys uses."""

    por_el1: int = 0
    por_el1_lazy_mmu: int = KPKEYS_PKEY_REG_INVAL


def arch_kpkeys_set_context(cpu: Cpu, ctx: int, skip_unchanged: bool = False) -> int:
    """Switch ``cpu`` to ``ctx``; return the previous POR_EL1 value, or
    ``KPKEYS_PKEY_REG_INVAL`` when ``skip_unchanged`` and the register already holds
    the context's value (``arch_kpkeys_enter_context``: no write, no ISB)."""
    kpkeys_check_context(ctx)
    prev = cpu.por_el1
    new = por_set_kpkeys_context(prev, ctx)
    if skip_unchanged and new == prev:
        return KPKEYS_PKEY_REG_INVAL
    cpu.write_por_el1(new)
    cpu.isb()
    return prev


def arch_kpkeys_restore_pkey_reg(cpu: Cpu, value: int) -> None:
    """Write ``value`` back (+ ISB); the invalid value 0 means nothing to restore."""
    if value == KPKEYS_PKEY_REG_INVAL:
        return
    cpu.write_por_el1(value)
    cpu.isb()


def cpu_enable_poe(cpu: Cpu, por_init: int) -> None:
    """``cpu_enable_poe``: POR_EL1 = init, TCR2_EL1.POE and E0POE set, then ISB."""
    cpu.write_por_el1(por_init)
    cpu.write_por_el0(POR_EL0_INIT)
    cpu.set_tcr2(poe=True, e0poe=True)
    cpu.isb()


def exception_entry_por(cpu: Cpu, por_init: int) -> int:
    """Entry code: save POR_EL1 in ``pt_regs``; reset to init (+ ISB) only if different."""
    saved = cpu.por_el1
    cpu.context_sync()  # exception entry is context-synchronising
    if saved != por_init:
        cpu.write_por_el1(por_init)
        cpu.isb()
    return saved


def exception_return_por(cpu: Cpu, saved: int, por_init: int, always: bool) -> None:
    """Return path: write ``pt_regs::por_el1`` back; ERET synchronises (no ISB).
    ``always``: v4-v8 write it whatever it is; otherwise (enter-leave) only when the
    entry reset the register (``saved != por_init``)."""
    if always or saved != por_init:
        cpu.write_por_el1(saved)
    cpu.context_sync()


def context_switch_por(cpu: Cpu, prev: ThreadStruct, nxt: ThreadStruct) -> None:
    """``permission_overlay_switch``: save live value; write the next one if it differs."""
    prev.por_el1 = cpu.por_el1
    if nxt.por_el1 != cpu.por_el1:
        cpu.write_por_el1(nxt.por_el1)
        cpu.isb()
