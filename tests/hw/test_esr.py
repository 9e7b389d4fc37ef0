"""ESR_EL1 syndromes: built by the MMU's faults, read back by decode_esr, as in oopses."""

from __future__ import annotations

import itertools

import pytest

from kpsim.hw.arm64.esr import EC, FSC_TEXT, FaultKind, decode_esr, esr_rows, make_esr
from kpsim.hw.arm64.fault import Fault


@pytest.mark.parametrize(
    ("kw", "esr"),
    [
        (
            {
                "ec": EC.DABT_CUR,
                "kind": FaultKind.PERMISSION,
                "level": 3,
                "write": True,
                "overlay": True,
            },
            0x40_9600_004F,
        ),
        (
            {"ec": EC.DABT_CUR, "kind": FaultKind.TRANSLATION, "level": 1, "write": True},
            0x9600_0045,
        ),
        ({"ec": EC.DABT_LOW, "kind": FaultKind.ACCESS_FLAG, "level": 3}, 0x9200_000B),
        ({"ec": EC.IABT_CUR, "kind": FaultKind.PERMISSION, "level": 3, "write": True}, 0x8600_000F),
        ({"ec": EC.IABT_LOW, "kind": FaultKind.TRANSLATION, "level": 2}, 0x8200_0006),
    ],
)
def test_make_esr(kw, esr):
    """make_esr packs EC, IL, WnR (data aborts only), FSC and ISS2.Overlay (bit 38)."""
    assert make_esr(**kw) == esr


# Values as they appear in arm64 oopses ("ESR = 0x...", "EC = 0x25: DABT (current EL)").
CRASH_REPORTS = [
    ("0x000000409600004f", "DABT (current EL)", "level 3 permission fault", "write", True),
    ("0x0000000096000045", "DABT (current EL)", "level 1 translation fault", "write", False),
    ("0x0000000096000005", "DABT (current EL)", "level 1 translation fault", "read", False),
    ("0x0000000096000006", "DABT (current EL)", "level 2 translation fault", "read", False),
    ("0x0000000096000047", "DABT (current EL)", "level 3 translation fault", "write", False),
    ("0x000000009600004f", "DABT (current EL)", "level 3 permission fault", "write", False),
    ("0x0000000096000021", "DABT (current EL)", "alignment fault", "read", False),
    (
        "0x0000000096000010",
        "DABT (current EL)",
        "synchronous external abort, not on a table walk",
        "read",
        False,
    ),
    (
        "0x000000008600000f",
        "IABT (current EL)",
        "level 3 permission fault",
        "instruction fetch",
        False,
    ),
    ("0x0000000092000007", "DABT (lower EL)", "level 3 translation fault", "read", False),
]


@pytest.mark.parametrize(("text", "ec_name", "fault", "access", "overlay"), CRASH_REPORTS)
def test_decode_crash_report_values(text, ec_name, fault, access, overlay):
    """ESR values copied from oopses decode to the words the kernel printed next to them."""
    words = decode_esr(int(text, 16))
    assert words["raw"] == text
    assert words["ec_name"] == ec_name
    assert (words["fault"], words["access"], words["overlay"]) == (fault, access, overlay)


def test_decode_series_overlay_fault_every_field():
    """0x000000409600004f: data abort, current EL, write, level-3 permission, ISS2.Overlay."""
    words = decode_esr(0x0000_0040_9600_004F)
    assert words["ec"] == "0x25"
    assert words["exception_class"] == "data abort from the current exception level"
    assert words["il"] is True
    assert words["iss2"] == "0x00000040"
    assert words["fsc"] == "0x0f"
    assert words["wnr"] is True
    assert words["overlay"] is True
    assert not any(words[k] for k in ("isv", "fnv", "ea", "cm", "s1ptw"))


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0xF200_0800, "BRK (AArch64)"),
        (0x5600_0000, "SVC (AArch64)"),
        (0xBE00_0000, "SError"),
        (0x0, "Unknown/Uncategorized"),
    ],
)
def test_decode_non_abort_classes_by_linux_name(value, name):
    """Other exception classes are named as Linux's esr_class_str() names them."""
    words = decode_esr(value)
    assert words["ec_name"] == name
    assert "fault" not in words
    if value:  # EC 0 is "unknown reason"
        assert "not an abort" in str(words["exception_class"])


@pytest.mark.parametrize(
    ("fsc", "text"),
    [
        (0x00, "level 0 address size fault"),
        (0x0B, "level 3 access flag fault"),
        (0x13, "synchronous external abort on a level -1 table walk"),
        (0x17, "synchronous external abort on a level 3 table walk"),
        (0x1B, "synchronous parity or ECC error on a level -1 table walk"),
        (0x23, "granule protection fault on a level -1 table walk"),
        (0x2B, "level -1 translation fault"),
        (0x30, "TLB conflict abort"),
        (0x3F, "fault status code 0x3f (reserved)"),
    ],
)
def test_fault_status_codes_in_words(fsc, text):
    """Every DFSC value reads as the Arm ARM names it."""
    assert decode_esr(0x9600_0000 | fsc)["fault"] == text


def test_res0_high_bits_are_flagged():
    """A value with ESR bits 63:56 set is flagged: it is probably not an ESR."""
    assert "RES0" in str(decode_esr(0xFF00_0000_9600_0004)["warning"])


@pytest.mark.parametrize(
    ("kind", "level", "write", "exec_", "el", "overlay"),
    [
        (k, lvl, w, x, el, ov)
        for k, lvl, w, x, el, ov in itertools.product(
            FaultKind, range(4), (False, True), (False, True), (0, 1), (False, True)
        )
        if not (w and x) and (not ov or k is FaultKind.PERMISSION)
    ],
)
def test_every_mmu_fault_decodes_back(kind, level, write, exec_, el, overlay):
    """decode_esr(fault.esr) gives back the fault's class, kind, level, access and overlay flag."""
    f = Fault(0xFFFF_0000_1234_5000, kind, level, write=write, exec=exec_, el=el, overlay=overlay)
    words = decode_esr(f.esr)
    assert int(str(words["ec"]), 16) == f.ec
    assert words["fault"] == f"level {level} {FSC_TEXT[kind]}"
    assert words["access"] == ("instruction fetch" if exec_ else "write" if write else "read")
    assert words["overlay"] is overlay
    assert f.far == 0xFFFF_0000_1234_5000


def test_esr_rows_name_every_decoded_field():
    """esr_rows lays out one (bits, field, meaning) row per decoded field."""
    rows = esr_rows(0x0000_0040_9600_004F)
    fields = [r[1] for r in rows]
    assert fields == [
        "raw",
        "EC",
        "IL",
        "ISS",
        "ISS2",
        "DFSC/IFSC",
        "WnR",
        "ISV",
        "FnV",
        "EA",
        "CM",
        "S1PTW",
        "ISS2.Overlay",
    ]
    assert (
        "38",
        "ISS2.Overlay",
        "yes: permission overlay (POE) fault: POR_ELx denied the access",
    ) in rows
