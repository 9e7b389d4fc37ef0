"""ESR_EL1 syndromes for the aborts kpsim's MMU raises.

Models the Arm ARM ESR_ELx description and Linux's ``arch/arm64/include/asm/esr.h``:
exception class (EC) in bits 31:26, IL in bit 25, ISS in 24:0, ISS2 in 55:32. For
data and instruction aborts, the fault status code (DFSC/IFSC, bits 5:0) encodes the
kind and level; WnR is ISS bit 6; ISS2.Overlay (``ESR_ELx_Overlay``) is ISS2 bit 6,
i.e. ESR bit 38.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

EC_SHIFT: Final = 26
IL: Final = 1 << 25
WNR: Final = 1 << 6
ISS2_SHIFT: Final = 32
ISS2_OVERLAY: Final = 1 << 6  # ESR_ELx_Overlay, within ISS2


class EC(IntEnum):
    UNKNOWN = 0x00
    IABT_LOW = 0x20
    IABT_CUR = 0x21
    DABT_LOW = 0x24
    DABT_CUR = 0x25


EC_TEXT: Final = {
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


FSC_TEXT: Final = {
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


# Linux's esr_class_str() (arch/arm64/kernel/traps.c), as "EC = 0x25: DABT (current EL)".
EC_NAMES: Final = {
    0x00: "Unknown/Uncategorized",
    0x01: "WFx",
    0x03: "CP15 MCR/MRC",
    0x04: "CP15 MCRR/MRRC",
    0x05: "CP14 MCR/MRC",
    0x06: "CP14 LDC/STC",
    0x07: "ASIMD",
    0x08: "CP10 MRC/VMRS",
    0x09: "PAC",
    0x0C: "CP14 MCRR/MRRC",
    0x0D: "BTI",
    0x0E: "PSTATE.IL",
    0x11: "SVC (AArch32)",
    0x12: "HVC (AArch32)",
    0x13: "SMC (AArch32)",
    0x15: "SVC (AArch64)",
    0x16: "HVC (AArch64)",
    0x17: "SMC (AArch64)",
    0x18: "MSR/MRS (AArch64)",
    0x19: "SVE",
    0x1A: "ERET/ERETAA/ERETAB",
    0x1C: "FPAC",
    0x1D: "SME",
    0x1F: "EL3 IMP DEF",
    0x20: "IABT (lower EL)",
    0x21: "IABT (current EL)",
    0x22: "PC Alignment",
    0x24: "DABT (lower EL)",
    0x25: "DABT (current EL)",
    0x26: "SP Alignment",
    0x27: "MOPS",
    0x28: "FP (AArch32)",
    0x2C: "FP (AArch64)",
    0x2D: "GCS",
    0x2F: "SError",
    0x30: "Breakpoint (lower EL)",
    0x31: "Breakpoint (current EL)",
    0x32: "Software Step (lower EL)",
    0x33: "Software Step (current EL)",
    0x34: "Watchpoint (lower EL)",
    0x35: "Watchpoint (current EL)",
    0x38: "BKPT (AArch32)",
    0x3A: "Vector catch (AArch32)",
    0x3C: "BRK (AArch64)",
}

# Fault status codes other than the level-indexed families 0x00-0x0F (Arm ARM, DFSC/IFSC).
_FSC_OTHER: Final = {
    0x10: "synchronous external abort, not on a table walk",
    0x11: "synchronous tag check fault",
    0x13: "synchronous external abort on a level -1 table walk",
    0x14: "synchronous external abort on a level 0 table walk",
    0x15: "synchronous external abort on a level 1 table walk",
    0x16: "synchronous external abort on a level 2 table walk",
    0x17: "synchronous external abort on a level 3 table walk",
    0x18: "synchronous parity or ECC error, not on a table walk",
    0x21: "alignment fault",
    0x28: "granule protection fault, not on a table walk",
    0x29: "level -1 address size fault",
    0x2B: "level -1 translation fault",
    0x30: "TLB conflict abort",
    0x31: "unsupported atomic hardware update fault",
    0x34: "IMPLEMENTATION DEFINED fault (lockdown)",
    0x35: "IMPLEMENTATION DEFINED fault (unsupported exclusive or atomic access)",
}


def decode_esr(value: int) -> dict[str, object]:
    """Every field of an ESR_EL1 value in words, as ``kpsim decode esr`` prints it."""
    ec = (value >> EC_SHIFT) & 0x3F
    iss = value & 0x1FFFFFF
    iss2 = (value >> ISS2_SHIFT) & 0xFFFFFF
    out: dict[str, object] = {
        "raw": f"{value:#018x}",
        "ec": f"{ec:#04x}",
        "ec_name": EC_NAMES.get(ec, "UNRECOGNIZED EC"),
        "exception_class": EC_TEXT.get(ec)  # type: ignore[call-overload]
        or "not an abort: ISS not decoded",
        "il": bool(value & IL),
        "instruction_length": "32 bits" if value & IL else "16 bits",
        "iss": f"{iss:#09x}",
        "iss2": f"{iss2:#010x}",
    }
    if ec in (EC.DABT_CUR, EC.DABT_LOW, EC.IABT_CUR, EC.IABT_LOW):
        out.update(_decode_abort_iss(ec, iss, iss2))
    if value >> 56:
        out["warning"] = f"bits 63:56 are RES0 but hold {value >> 56:#x}: is this an ESR?"
    return out


def _decode_abort_iss(ec: int, iss: int, iss2: int) -> dict[str, object]:
    code = iss & 0x3F
    out: dict[str, object] = {"fsc": f"{code:#04x}", "fault": _fsc_text(code)}
    if ec in (EC.DABT_CUR, EC.DABT_LOW):
        out["wnr"] = bool(iss & WNR)
        out["access"] = "write" if iss & WNR else "read"
        out["isv"] = bool(iss & (1 << 24))
        out["fnv"] = bool(iss & (1 << 10))
        out["ea"] = bool(iss & (1 << 9))
        out["cm"] = bool(iss & (1 << 8))
        out["s1ptw"] = bool(iss & (1 << 7))
    else:
        out["access"] = "instruction fetch"
    out["overlay"] = bool(iss2 & ISS2_OVERLAY)
    if iss2 & ISS2_OVERLAY:
        out["note"] = "permission overlay (POE) fault: POR_ELx denied the access"
    return out


def _fsc_text(code: int) -> str:
    if code <= 0x0F:
        base = code & ~0x3
        level = code & 0x3
        return f"level {level} {FSC_TEXT[FaultKind(base)]}"
    if code in _FSC_OTHER:
        return _FSC_OTHER[code]
    if 0x1B <= code <= 0x1F:
        return f"synchronous parity or ECC error on a level {code - 0x1C} table walk"
    if 0x23 <= code <= 0x27:
        return f"granule protection fault on a level {code - 0x24} table walk"
    return f"fault status code {code:#04x} (reserved)"


# decode_esr() key, bits, field name, words when set (a format of decode_esr()'s
# words, ``value`` being the key's own), words when clear (booleans only).
_ESR_ROWS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    ("raw", "63:0", "raw", "{value}", ""),
    ("ec", "31:26", "EC", "{value}: {ec_name}, {exception_class}", ""),
    ("il", "25", "IL", "yes: 32-bit instruction", "no: 16-bit instruction"),
    ("iss", "24:0", "ISS", "{value}", ""),
    ("iss2", "55:32", "ISS2", "{value}", ""),
    ("fsc", "5:0", "DFSC/IFSC", "{value}: {fault}", ""),
    ("wnr", "6", "WnR", "yes: caused by a write", "no: caused by a read"),
    ("isv", "24", "ISV", "yes: instruction syndrome valid", "no: no instruction syndrome"),
    ("fnv", "10", "FnV", "yes: FAR_EL1 is not valid", "no: FAR_EL1 holds the faulting address"),
    ("ea", "9", "EA", "yes: external abort", "no"),
    ("cm", "8", "CM", "yes: cache maintenance instruction", "no"),
    ("s1ptw", "7", "S1PTW", "yes: on a stage-2 walk for stage 1", "no"),
    ("overlay", "38", "ISS2.Overlay", "yes: {note}", "no: not a permission overlay fault"),
    ("warning", "63:56", "RES0", "{value}", ""),
)


def esr_rows(value: int) -> list[tuple[str, str, str]]:
    """(bits, field, meaning) for every field of an ESR_EL1 value, for ``kpsim decode``."""
    words = decode_esr(value)
    out = []
    for key, bits, field, yes, no in _ESR_ROWS:
        if key not in words:
            continue
        v = words[key]
        text = (yes if v or not isinstance(v, bool) else no).format(**{**words, "value": v})
        out.append((bits, field, text))
    return out
