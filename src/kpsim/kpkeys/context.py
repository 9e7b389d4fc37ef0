"""The kpkeys framework (``include/linux/kpkeys.h``, v7 naming and the enter/leave form;
spec §3).

``kpkeys_set_context(ctx)`` validates the context, calls the arch hook and returns the
previous register value; ``kpkeys_restore_pkey_reg(value)`` writes it back (a no-op
for ``KPKEYS_PKEY_REG_INVAL``). ``kpkeys_enter_context(ctx)`` /
``kpkeys_leave_context(state)`` are the API after the review of v8 01/24: enter returns
a :class:`~kpsim.mm.kpkeys_defs.KpkeysState`, ``entered_context`` false when the
register already held the context's value (nothing written), and leave restores only
an entered context. Which of the two the arch hook implements is the machine's
``series`` (the arch's ``skip_unchanged``); both are spelled over the same hook.
:func:`kpkeys_guard` is the scoped guard (``KPKEYS_GUARD_COND``) as a context manager
that restores on exit even when an exception escapes. Without POE,
``kpkeys_enabled()`` is false and guards do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kpsim.kpkeys.protocol import KpkeysArch
from kpsim.mm.kpkeys_defs import (
    KPKEYS_CTX_MAX,
    KPKEYS_CTX_MIN,
    KPKEYS_PKEY_REG_INVAL,
    KpkeysState,
)


def kpkeys_enabled(arch: KpkeysArch) -> bool:
    """``kpkeys_enabled()`` = ``arch_supports_kpkeys()`` = ``system_supports_poe()``."""
    return arch.system_supports_poe()


def kpkeys_set_context(arch: KpkeysArch, ctx: int) -> int:
    if not KPKEYS_CTX_MIN <= ctx <= KPKEYS_CTX_MAX:
        raise ValueError(f"kpkeys context {ctx} outside [{KPKEYS_CTX_MIN}, {KPKEYS_CTX_MAX}]")
    return arch.arch_kpkeys_set_context(ctx)


def kpkeys_restore_pkey_reg(arch: KpkeysArch, value: int) -> None:
    if value == KPKEYS_PKEY_REG_INVAL:
        return
    arch.arch_kpkeys_restore_pkey_reg(value)


def kpkeys_enter_context(arch: KpkeysArch, ctx: int) -> KpkeysState:
    """``kpkeys_enter_context()``: the state ``kpkeys_leave_context()`` takes."""
    prev = kpkeys_set_context(arch, ctx)
    if prev == KPKEYS_PKEY_REG_INVAL:
        return KpkeysState()
    return KpkeysState(entered_context=True, por=prev)


def kpkeys_leave_context(arch: KpkeysArch, state: KpkeysState) -> None:
    """``kpkeys_leave_context()``: restore an entered context, else nothing."""
    if state.entered_context:
        arch.arch_kpkeys_restore_pkey_reg(state.por)


@contextmanager
def kpkeys_guard(arch: KpkeysArch, ctx: int, cond: bool | None = None) -> Iterator[int]:
    """``KPKEYS_GUARD_COND``: switch if ``cond`` (default ``kpkeys_enabled()``)."""
    if cond is None:
        cond = kpkeys_enabled(arch)
    saved = kpkeys_set_context(arch, ctx) if cond else KPKEYS_PKEY_REG_INVAL
    if cond:
        arch.k.counters["kpkeys_guard_entries"] += 1
    try:
        yield saved
    finally:
        kpkeys_restore_pkey_reg(arch, saved)
