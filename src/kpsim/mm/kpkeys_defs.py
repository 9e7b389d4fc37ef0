"""Generic kpkeys constants (``include/linux/kpkeys.h``, ``asm-generic/kpkeys.h``, v7) and
``struct kpkeys_state`` (``include/linux/kpkeys_types.h``, enter/leave API)."""

from __future__ import annotations

from dataclasses import dataclass

KPKEYS_CTX_DEFAULT = 0
KPKEYS_CTX_PGTABLES = 1
KPKEYS_CTX_MIN = KPKEYS_CTX_DEFAULT
KPKEYS_CTX_MAX = KPKEYS_CTX_PGTABLES
KPKEYS_PKEY_DEFAULT = 0
KPKEYS_PKEY_PGTABLES = 1
KPKEYS_PKEY_REG_INVAL = 0


@dataclass(frozen=True, slots=True)
class KpkeysState:
    """``struct kpkeys_state``: whether ``kpkeys_enter_context()`` wrote the register,
    and the value ``kpkeys_leave_context()`` restores (arm64's ``arch_state.por``)."""

    entered_context: bool = False
    por: int = KPKEYS_PKEY_REG_INVAL
