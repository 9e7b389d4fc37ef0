"""Generic kpkeys constants (``include/linux/kpkeys.h``, ``asm-generic/kpkeys.h``, v7)."""

from __future__ import annotations

KPKEYS_CTX_DEFAULT = 0
KPKEYS_CTX_PGTABLES = 1
KPKEYS_CTX_MIN = KPKEYS_CTX_DEFAULT
KPKEYS_CTX_MAX = KPKEYS_CTX_PGTABLES
KPKEYS_PKEY_DEFAULT = 0
KPKEYS_PKEY_PGTABLES = 1
KPKEYS_PKEY_REG_INVAL = 0
