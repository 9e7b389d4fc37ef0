"""The kpkeys framework (``include/linux/kpkeys.h``, v7 naming; spec §3).

``kpkeys_set_context(ctx)`` validates the context, calls the arch hook and returns the
previous register value; ``kpkeys_restore_pkey_reg(value)`` writes it back (a no-op
for ``KPKEYS_PKEY_REG_INVAL``); :func:`kpkeys_guard` is the scoped guard
(``KPKEYS_GUARD_COND``) as a context manager that restores on exit even when an
exception escapes. Without POE, ``kpkeys_enabled()`` is false and guards do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kpsim.kpkeys.protocol import KpkeysArch
from kpsim.mm.kpkeys_defs import (
    KPKEYS_CTX_MAX,
    KPKEYS_CTX_MIN,
    KPKEYS_PKEY_REG_INVAL,
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
