"""POR_EL1 / POR_EL0, the Permission Overlay Registers (FEAT_S1POE).

Models the Arm ARM register description and Linux's helpers in
``arch/arm64/include/asm/por.h``: 16 fields of 4 bits, pkey ``i`` in bits
[4i+3:4i]; R=1, X=2, W=4; any value with bit 3 set grants nothing. Only fields
0-7 are reachable, because POIndex is 3 bits (``arch_max_pkey()`` = 8).
"""

from __future__ import annotations

from typing import Final

from kpsim.errors import InputError
from kpsim.hw.arm64.descriptors import perm_str

POR_ELX_BITS_PER_IDX: Final = 4
POE_MASK: Final = 0xF
POE_NONE: Final = 0x0
POE_R: Final = 0x1
POE_X: Final = 0x2
POE_RX: Final = 0x3
POE_W: Final = 0x4
POE_RW: Final = 0x5
POE_WX: Final = 0x6
POE_RWX: Final = 0x7
ARCH_MAX_PKEY: Final = 8
POR_FIELDS: Final = 16

POE_NAMES: Final = {
    POE_NONE: "NONE",
    POE_R: "R",
    POE_X: "X",
    POE_RX: "RX",
    POE_W: "W",
    POE_RW: "RW",
    POE_WX: "WX",
    POE_RWX: "RWX",
}


def por_elx_perm_shift(pkey: int) -> int:
    """``POR_ELx_PERM_SHIFT(pkey)``."""
    return POR_ELX_BITS_PER_IDX * pkey


def por_elx_perm_get(por: int, pkey: int) -> int:
    """The 4-bit field of ``pkey`` (``POR_ELx_PERM_GET``)."""
    _check_pkey(pkey, POR_FIELDS)
    return (por >> por_elx_perm_shift(pkey)) & POE_MASK


def por_elx_set_pkey_perms(por: int, pkey: int, perms: int) -> int:
    """Clear ``pkey``'s field and OR in ``perms`` (``por_elx_set_pkey_perms``)."""
    if not 0 <= pkey < POR_FIELDS:
        _check_pkey(pkey, POR_FIELDS)
    shift = POR_ELX_BITS_PER_IDX * pkey
    return (por & ~(POE_MASK << shift)) | ((perms & POE_MASK) << shift)


def effective_overlay(field: int) -> int:
    """Rights a field grants: a value with bit 3 set grants nothing."""
    return 0 if field & 0x8 else field & 0x7


def por_elx_allows_read(por: int, pkey: int) -> bool:
    return bool(effective_overlay(por_elx_perm_get(por, pkey)) & POE_R)


def por_elx_allows_write(por: int, pkey: int) -> bool:
    return bool(effective_overlay(por_elx_perm_get(por, pkey)) & POE_W)


def por_elx_allows_exec(por: int, pkey: int) -> bool:
    return bool(effective_overlay(por_elx_perm_get(por, pkey)) & POE_X)


def overlay_table(por: int) -> tuple[int, ...]:
    """Per-POIndex rights (8 entries) for fast access checks."""
    return tuple(effective_overlay((por >> (4 * i)) & POE_MASK) for i in range(ARCH_MAX_PKEY))


def field_name(field: int) -> str:
    if field & 0x8:
        return f"{field:#x} (bit 3 set: no access)"
    return POE_NAMES[field]


def decode_por(value: int) -> list[dict[str, object]]:
    """Every pkey field in words; fields 8-15 are shown only if non-zero."""
    out: list[dict[str, object]] = []
    for i in range(POR_FIELDS):
        f = (value >> (4 * i)) & POE_MASK
        if i >= ARCH_MAX_PKEY and not f:
            continue
        out.append(
            {
                "pkey": i,
                "bits": f"{4 * i + 3}:{4 * i}",
                "field": f,
                "name": field_name(f),
                "access": perm_str(f),
                "meaning": perm_words(f),
                "reachable": i < ARCH_MAX_PKEY,
            }
        )
    return out


def perm_words(field: int) -> str:
    """A field's rights in words: ``read, write``, ``no access``..."""
    rights = effective_overlay(field)
    words = [
        w for bit, w in ((POE_R, "read"), (POE_W, "write"), (POE_X, "execute")) if rights & bit
    ]
    return ", ".join(words) if words else "no access"


def por_rows(value: int) -> list[tuple[str, str, str]]:
    """(bits, field, meaning) per pkey of a POR_ELx value, for ``kpsim decode``."""
    out = [("63:0", "raw", f"{value:#018x}")]
    for row in decode_por(value):
        where = "" if row["reachable"] else " (unreachable: POIndex is 3 bits)"
        field = int(row["field"])  # type: ignore[call-overload]
        name = "bit 3 set" if field & 0x8 else row["name"]
        text = f"{field:#x} {name}: {row['meaning']}{where}"
        out.append((str(row["bits"]), f"pkey {row['pkey']}", text))
    return out


def _check_pkey(pkey: int, limit: int) -> None:
    if not 0 <= pkey < limit:
        raise InputError(f"pkey {pkey} out of range 0..{limit - 1}")
