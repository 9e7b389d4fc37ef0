"""x86 kpkeys hooks with PKS: IA32_PKRS contexts, exception entry, context switch.

There is no upstream x86 port of kpkeys; this follows the arm64 hooks of the series
(``asm/kpkeys.h``) on Ira Weiny's PKS series (``pks_write_pkrs``: a WRMSR to
``MSR_IA32_PKRS``, skipped when the per-CPU ``pkrs_cache`` already matches; the
exception entry code saves PKRS in ``pt_regs`` (``pks_save_pt_regs``), loads the
initial value, and the return path writes the saved one back
(``pks_restore_pt_regs``); the context switch writes the incoming thread's value,
``pks_write_current``) and on the rights of SDM 4.6.2 (AD and WD per key, no TLB
flush). WRMSR to IA32_PKRS is not serialising, but accesses the new value governs wait
for it (WRPKRU's ordering, as the series' ``pks_write_pkrs`` comment says), so nothing
like arm64's ISB follows it.

Values (spec §2.2, a model choice): key 0 read/write in every context; key 1
(``KPKEYS_PKEY_PGTABLES``) write-disabled (WD) in the default context and read/write
in ``KPKEYS_CTX_PGTABLES``; keys 2-15 access-disabled (AD), as Ira Weiny's
``PKS_INIT_VALUE`` leaves keys no consumer has claimed. Without the page-table feature
built in, key 1 is AD too.

``KPKEYS_PKEY_REG_INVAL`` is 0, a valid PKRS value (every key read/write): the saved
values these hooks return carry bit 32 (reserved in IA32_PKRS, so never a register
value) and the restore strips it; a saved value is therefore never 0 (spec §2.2's
conflict, resolved without changing the generic constant; docs/fidelity.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from kpsim.arch.generic.kpkeys import kpkeys_check_context
from kpsim.hw.x86.cpu import X86Cpu
from kpsim.hw.x86.pkeys import MSR_IA32_PKRS, NR_PKEYS, set_key
from kpsim.mm.kpkeys_defs import (
    KPKEYS_CTX_PGTABLES,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    KPKEYS_PKEY_REG_INVAL,
)

#: bit 32 of a saved PKRS value: "a value to restore" (never a register value)
PKRS_SAVED = 1 << 32
PKRS_MASK = (1 << 32) - 1


def pkrs_init_value(hardened_pgtables: bool) -> int:
    """``PKS_INIT_VALUE``: key 0 RW; key 1 WD with the feature built in (AD without);
    keys 2-15 AD."""
    v = 0
    for key in range(2, NR_PKEYS):
        v = set_key(v, key, ad=True)
    if hardened_pgtables:
        return set_key(v, KPKEYS_PKEY_PGTABLES, wd=True)
    return set_key(v, KPKEYS_PKEY_PGTABLES, ad=True)


def pkrs_set_kpkeys_context(pkrs: int, ctx: int) -> int:
    """The PKRS value for ``ctx``, other keys' fields untouched."""
    v = set_key(pkrs, KPKEYS_PKEY_DEFAULT)
    return set_key(v, KPKEYS_PKEY_PGTABLES, wd=ctx != KPKEYS_CTX_PGTABLES)


@dataclass(slots=True)
class ThreadStruct:
    """The x86 ``thread_struct`` fields the PKS series and kpkeys use."""

    pkrs: int = 0  # saved IA32_PKRS (``thread.pks_saved_pkrs``)
    pkrs_lazy_mmu: int = KPKEYS_PKEY_REG_INVAL


def pks_write_pkrs(cpu: X86Cpu, value: int) -> bool:
    """``pks_write_pkrs``: WRMSR only if the value differs; True if written."""
    if cpu.pkrs == value:
        return False
    cpu.wrmsr(MSR_IA32_PKRS, value)
    return True


def arch_kpkeys_set_context(cpu: X86Cpu, ctx: int, skip_unchanged: bool = False) -> int:
    """Switch ``cpu`` to ``ctx``; the previous PKRS tagged with :data:`PKRS_SAVED`, or
    ``KPKEYS_PKEY_REG_INVAL`` when ``skip_unchanged`` and PKRS already holds it."""
    kpkeys_check_context(ctx)
    prev = cpu.pkrs
    new = pkrs_set_kpkeys_context(prev, ctx)
    if skip_unchanged and new == prev:
        return KPKEYS_PKEY_REG_INVAL
    cpu.wrmsr(MSR_IA32_PKRS, new)
    return prev | PKRS_SAVED


def arch_kpkeys_restore_pkey_reg(cpu: X86Cpu, value: int) -> None:
    """Write a saved value back; ``KPKEYS_PKEY_REG_INVAL`` means nothing to restore."""
    if value == KPKEYS_PKEY_REG_INVAL:
        return
    cpu.wrmsr(MSR_IA32_PKRS, value & PKRS_MASK)


def exception_entry_pkrs(cpu: X86Cpu, pkrs_init: int) -> int:
    """``pks_save_pt_regs``: save PKRS in ``pt_regs``; load the initial value if it differs."""
    saved = cpu.pkrs
    pks_write_pkrs(cpu, pkrs_init)
    return saved


def exception_return_pkrs(cpu: X86Cpu, saved: int) -> None:
    """``pks_restore_pt_regs``: write the saved value back (if it differs)."""
    pks_write_pkrs(cpu, saved)


def context_switch_pkrs(cpu: X86Cpu, prev: ThreadStruct, nxt: ThreadStruct) -> None:
    """``pks_write_current`` from ``__switch_to``: write the next thread's value if it
    differs; the live value is saved in the outgoing thread first (the series keeps the
    thread's copy current instead: the same value while changes go through kpkeys)."""
    prev.pkrs = cpu.pkrs
    pks_write_pkrs(cpu, nxt.pkrs)
