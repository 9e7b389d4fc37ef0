"""GFP (get-free-pages) flags: ``include/linux/gfp_types.h``.

Bit positions follow Linux 6.x for a configuration without KASAN hardware tags,
lockdep or slab object extensions (those bits are config-dependent and absent here).
``Gfp.PGTABLE_SPLIT`` is the flag the v6 kpkeys series adds for linear-map split
paths (kpkeys-spec.md §5.8); it takes the first config-dependent slot, bit 24.

What the model's allocator honours (``kpsim.mm.page_alloc``): ``ZERO`` (clear the
pages), ``COMP`` (compound head with its order), ``DIRECT_RECLAIM`` (run the
shrinkers once before failing), ``NOWARN`` (no allocation-failure report),
``NOFAIL`` (failure raises :class:`kpsim.errors.OutOfMemory` instead of looping
forever). ``ACCOUNT`` and ``PGTABLE_SPLIT`` are carried for callers (memcg charging
is not modelled). Zone modifiers, ``HIGH`` and the other reclaim modifiers are
accepted and ignored: the model has one zone and no watermarks.

Python cannot spell ``__GFP_ZERO`` as a public name, so the single bits are
``Gfp.ZERO`` etc. and module constants ``GFP_ZERO`` etc.; the composites keep their
Linux names (``GFP_KERNEL``, ``GFP_PGTABLE_USER``...).
"""

from __future__ import annotations

import enum


class Gfp(enum.IntFlag):
    """One ``gfp_t``; single bits are Linux's ``__GFP_*`` without the underscores."""

    DMA = 1 << 0
    HIGHMEM = 1 << 1
    DMA32 = 1 << 2
    MOVABLE = 1 << 3
    RECLAIMABLE = 1 << 4
    HIGH = 1 << 5
    IO = 1 << 6
    FS = 1 << 7
    ZERO = 1 << 8
    # bit 9 is unused in Linux 6.x (it was __GFP_ATOMIC)
    DIRECT_RECLAIM = 1 << 10
    KSWAPD_RECLAIM = 1 << 11
    WRITE = 1 << 12
    NOWARN = 1 << 13
    RETRY_MAYFAIL = 1 << 14
    NOFAIL = 1 << 15
    NORETRY = 1 << 16
    MEMALLOC = 1 << 17
    COMP = 1 << 18
    NOMEMALLOC = 1 << 19
    HARDWALL = 1 << 20
    THISNODE = 1 << 21
    ACCOUNT = 1 << 22
    ZEROTAGS = 1 << 23
    PGTABLE_SPLIT = 1 << 24  # v6 kpkeys: page-table pages for a linear-map split

    # composites (aliases): __GFP_RECLAIM and the GFP_* type masks
    RECLAIM = DIRECT_RECLAIM | KSWAPD_RECLAIM
    KERNEL = RECLAIM | IO | FS
    ATOMIC = HIGH | KSWAPD_RECLAIM


# Single bits under Python-legal names (Linux: __GFP_ZERO, __GFP_COMP...).
GFP_DMA = Gfp.DMA
GFP_HIGHMEM = Gfp.HIGHMEM
GFP_MOVABLE = Gfp.MOVABLE
GFP_HIGH = Gfp.HIGH
GFP_IO = Gfp.IO
GFP_FS = Gfp.FS
GFP_ZERO = Gfp.ZERO
GFP_DIRECT_RECLAIM = Gfp.DIRECT_RECLAIM
GFP_KSWAPD_RECLAIM = Gfp.KSWAPD_RECLAIM
GFP_RECLAIM = Gfp.RECLAIM
GFP_NOWARN = Gfp.NOWARN
GFP_RETRY_MAYFAIL = Gfp.RETRY_MAYFAIL
GFP_NOFAIL = Gfp.NOFAIL
GFP_NORETRY = Gfp.NORETRY
GFP_COMP = Gfp.COMP
GFP_HARDWALL = Gfp.HARDWALL
GFP_ACCOUNT = Gfp.ACCOUNT
GFP_PGTABLE_SPLIT = Gfp.PGTABLE_SPLIT

# Composite type masks, as in Linux.
GFP_KERNEL = Gfp.KERNEL
GFP_KERNEL_ACCOUNT = Gfp.KERNEL | Gfp.ACCOUNT
GFP_ATOMIC = Gfp.ATOMIC
GFP_NOWAIT = Gfp.KSWAPD_RECLAIM | Gfp.NOWARN  # NOWARN implied since Linux 6.18
GFP_NOIO = Gfp.RECLAIM
GFP_NOFS = Gfp.RECLAIM | Gfp.IO
GFP_USER = Gfp.RECLAIM | Gfp.IO | Gfp.FS | Gfp.HARDWALL
GFP_HIGHUSER = GFP_USER | Gfp.HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | Gfp.MOVABLE
GFP_PGTABLE_KERNEL = Gfp.KERNEL | Gfp.ZERO
GFP_PGTABLE_USER = GFP_PGTABLE_KERNEL | Gfp.ACCOUNT


def gfpflags_allow_blocking(gfp: Gfp | int) -> bool:
    """``gfpflags_allow_blocking()``: may this allocation sleep and reclaim directly?"""
    return bool(int(gfp) & Gfp.DIRECT_RECLAIM)


def format_gfp(gfp: Gfp | int) -> str:
    """``%pGg``-style rendering: ``GFP_KERNEL|__GFP_ZERO``."""
    g = int(gfp)
    if g == 0:
        return "0"
    parts: list[str] = []
    for name, mask in (("GFP_KERNEL", int(Gfp.KERNEL)), ("GFP_ATOMIC", int(Gfp.ATOMIC))):
        if g & mask == mask:
            parts.append(name)
            g &= ~mask
            break
    for bit in Gfp:
        if bit.value.bit_count() == 1 and g & bit.value:
            parts.append(f"__GFP_{bit.name}")
            g &= ~bit.value
    if g:
        parts.append(f"{g:#x}")
    return "|".join(parts)
