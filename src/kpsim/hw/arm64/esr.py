"""ESR_EL1 syndromes for the aborts kpsim's MMU raises.

Models the Arm ARM ESR_ELx description and Linux's ``arch/arm64/include/asm/esr.h``:
exception class (EC) in bits 31:26, IL in bit 25, ISS in 24:0, ISS2 in 55:32. For
data and instruction aborts, the fault status code (DFSC/IFSC, bits 5:0) encodes the
kind and level; WnR is ISS bit 6; ISS2.Overlay (``ESR_ELx_Overlay``) is ISS2 bit 6,
i.e. ESR bit 38.
"""

from __future__ import annotations

from enum import IntEnum

EC_SHIFT = 26
IL = 1 << 25
WNR = 1 << 6
ISS2_SHIFT = 32
ISS2_OVERLAY = 1 << 6  # ESR_ELx_Overlay, within ISS2


class EC(IntEnum):
    UNKNOWN = 0x00
    IABT_LOW = 0x20
    IABT_CUR = 0x21
    DABT_LOW = 0x24
    DABT_CUR = 0x25


EC_TEXT = {
    EC.UNKNOWN: "unknown reason",
    EC.IABT_LOW: "instruction abort from a lower exception level",
    EC.IABT_CUR: "instruction abort from the current exception level",
    EC.DABT_LOW: "data abort from a lower exception level",
    EC.DABT_CUR: "data abort from the current exception level",
}


class FaultKind(IntEnum):
    """Fault status code families (the level is added to the base)."""

    ADDRESS_SIZE = 0x00
    TRANSLATION = 0x04
    ACCESS_FLAG = 0x08
    PERMISSION = 0x0C


FSC_TEXT = {
    FaultKind.ADDRESS_SIZE: "address size fault",
    FaultKind.TRANSLATION: "translation fault",
    FaultKind.ACCESS_FLAG: "access flag fault",
    FaultKind.PERMISSION: "permission fault",
}


def fsc(kind: FaultKind, level: int) -> int:
    return int(kind) + level


def make_esr(
    *, ec: EC, kind: FaultKind, level: int, write: bool = False, overlay: bool = False
) -> int:
    """Build the ESR_EL1 value a data or instruction abort reports."""
    v = (int(ec) << EC_SHIFT) | IL | fsc(kind, level)
    if write and ec in (EC.DABT_CUR, EC.DABT_LOW):
        v |= WNR
    if overlay:
        v |= ISS2_OVERLAY << ISS2_SHIFT
    return v


def decode_esr(value: int) -> dict[str, object]:
    """Every field of an ESR_EL1 value in words, as ``kpsim decode esr`` prints it."""
    ec = (value >> EC_SHIFT) & 0x3F
    iss = value & 0x1FFFFFF
    iss2 = (value >> ISS2_SHIFT) & 0xFFFFFF
    out: dict[str, object] = {
        "raw": f"{value:#018x}",
        "ec": f"{ec:#04x}",
        "exception_class": EC_TEXT.get(ec, "not an abort kpsim models"),  # type: ignore[call-overload]
        "il": bool(value & IL),
        "iss": f"{iss:#09x}",
        "iss2": f"{iss2:#010x}",
    }
    if ec in (EC.DABT_CUR, EC.DABT_LOW, EC.IABT_CUR, EC.IABT_LOW):
        code = iss & 0x3F
        out["fsc"] = f"{code:#04x}"
        out["fault"] = _fsc_text(code)
        if ec in (EC.DABT_CUR, EC.DABT_LOW):
            out["wnr"] = bool(iss & WNR)
            out["access"] = "write" if iss & WNR else "read"
            out["isv"] = bool(iss & (1 << 24))
            out["cm"] = bool(iss & (1 << 8))
            out["s1ptw"] = bool(iss & (1 << 7))
            out["fnv"] = bool(iss & (1 << 10))
        out["overlay"] = bool(iss2 & ISS2_OVERLAY)
        if iss2 & ISS2_OVERLAY:
            out["note"] = "permission overlay (POE) fault: POR_ELx denied the access"
    return out


def _fsc_text(code: int) -> str:
    if code <= 0x0F:
        base = code & ~0x3
        level = code & 0x3
        return f"level {level} {FSC_TEXT[FaultKind(base)]}"
    if code == 0x10:
        return "synchronous external abort"
    if code == 0x21:
        return "alignment fault"
    if code == 0x30:
        return "TLB conflict abort"
    return f"fault status code {code:#04x}"
