"""The arch-independent checks of the kpkeys arch hooks (``include/linux/kpkeys.h``)."""

from __future__ import annotations

from kpsim.mm.kpkeys_defs import KPKEYS_CTX_MAX, KPKEYS_CTX_MIN


def kpkeys_check_context(ctx: int) -> None:
    """``BUILD_BUG_ON(!__builtin_constant_p(ctx) || ctx < KPKEYS_CTX_MIN || ...)``: a
    context out of range is a build error in Linux, a ``ValueError`` here."""
    if not KPKEYS_CTX_MIN <= ctx <= KPKEYS_CTX_MAX:
        raise ValueError(f"kpkeys context {ctx} out of range (a build error in Linux)")
