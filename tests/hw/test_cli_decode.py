"""``kpsim decode``: golden text and JSON, crash-report value forms, and exit status 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kpsim.cli.main import main

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "decode"
UPDATE = os.environ.get("KPSIM_UPDATE_GOLDEN") == "1"

CASES = {
    "pte-linear-map-ptp": ["pte", "0x10e80008ffbbb707"],
    "pte-invalid": ["pte", "0x0"],
    "pmd-block": ["pmd", "0x0068000080000f01"],
    "pud-table": ["pud", "0x0000000041fff003"],
    "pgd-table": ["pgd", "0x0000000041ffe003"],
    "esr-overlay-write": ["esr", "0x000000409600004f"],
    "esr-null-deref": ["esr", "0x0000000096000045"],
    "por-pgtables-ctx": ["por", "0x57"],
    "por-default-ctx": ["por", "0x17"],
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["decode", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def golden(name: str, actual: str) -> str:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    return path.read_text()


@pytest.mark.parametrize("name", CASES)
def test_decode_text_matches_golden(name, capsys):
    """The text output of each case is exactly its golden file (tests/data/decode/*.txt)."""
    status, out, err = run(capsys, *CASES[name])
    assert (status, err) == (0, "")
    assert out == golden(f"{name}.txt", out)


@pytest.mark.parametrize("name", CASES)
def test_decode_json_matches_golden(name, capsys):
    """--json prints one JSON document equal to its golden file (tests/data/decode/*.json)."""
    status, out, err = run(capsys, *CASES[name], "--json")
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert doc == json.loads(golden(f"{name}.json", out))
    assert doc["register"] == CASES[name][0]


def test_pte_with_bit_60_reads_pkey_1(capsys):
    """A level-3 descriptor with bit 60 set is mapped with pkey 1."""
    _, out, _ = run(capsys, "pte", hex(0x0068_0000_8000_0F03 | 1 << 60))
    assert "62:60  POIndex         1: pkey 1" in out
    assert out.rstrip().endswith("pkey 1")
    _, out, _ = run(capsys, "pte", hex(0x0068_0000_8000_0F03 | 1 << 60), "--json")
    assert json.loads(out)["pkey"] == 1


def test_esr_example_reads_right(capsys):
    """ESR 0x000000409600004f: data abort from the current EL, write, L3 permission, Overlay."""
    _, out, _ = run(capsys, "esr", "0x000000409600004f")
    summary = out.splitlines()[-1]
    assert summary == (
        "summary: data abort from the current exception level: write, level 3 permission "
        "fault, ISS2.Overlay set (the permission overlay denied it)"
    )


def test_por_example_reads_right(capsys):
    """POR 0x57 is pkey 0 RWX and pkey 1 RW."""
    _, out, _ = run(capsys, "por", "0x57")
    assert out.splitlines()[-1] == "summary: pkey 0 RWX, pkey 1 RW"
    _, out, _ = run(capsys, "por", "0x57", "--json")
    pkeys = json.loads(out)["pkeys"]
    assert [(p["pkey"], p["name"]) for p in pkeys[:3]] == [(0, "RWX"), (1, "RW"), (2, "NONE")]


@pytest.mark.parametrize(
    "text",
    [
        "0x10e80008ffbbb707",
        "10e80008ffbbb707",
        "0X10E80008FFBBB707",
        "0x10e8_0008_ffbb_b707",
        " 0x10e80008ffbbb707 ",
    ],
)
def test_values_as_pasted_from_crash_reports(text, capsys):
    """0x-prefixed, bare 16-digit (as oopses print), upper-case and underscored values all parse."""
    _, out, _ = run(capsys, "pte", text, "--json")
    assert json.loads(out)["raw"] == "0x10e80008ffbbb707"


def test_bare_16_digits_are_hex_even_without_letters(capsys):
    """A bare 16-digit value such as an oops's pmd=0000000080000003 is hex, not decimal."""
    _, out, _ = run(capsys, "pmd", "1000000080000003", "--json")
    assert json.loads(out)["raw"] == "0x1000000080000003"


@pytest.mark.parametrize(("what", "level"), [("PTE", 3), ("p4d", 0), ("pgd", 0)])
def test_register_names_are_case_insensitive_and_p4d_is_pgd(what, level, capsys):
    """Register names ignore case; p4d (folded on arm64) decodes as a level-0 descriptor."""
    _, out, _ = run(capsys, what, "0x3", "--json")
    assert json.loads(out)["level"] == level


@pytest.mark.parametrize("what", ["esr_el1", "POR_EL1", "por_el0"])
def test_register_aliases(what, capsys):
    """ESR_EL1, POR_EL1 and POR_EL0 are accepted as written in the Arm ARM."""
    status, out, _ = run(capsys, what, "0x57", "--json")
    assert status == 0 and json.loads(out)["register"] in ("esr", "por")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pte", "zz"], "kpsim decode: pte value: not a number: 'zz'\n"),
        (
            ["pte", "0x1ffffffffffffffff"],
            "kpsim decode: pte value: '0x1ffffffffffffffff' is outside the 64-bit range\n",
        ),
        (
            ["esr", "18446744073709551616"],
            "kpsim decode: esr value: '18446744073709551616' is outside the 64-bit range\n",
        ),
        (["por", "-1"], "kpsim decode: por value: '-1' is outside the 64-bit range\n"),
        (
            ["foo", "0x1"],
            "kpsim decode: unknown register 'foo': use pte, pmd, pud, pgd, esr or por (arm64); "
            "x86-pte, x86-pde, x86-pdpte, x86-pml4e, pkrs, pkru or pf-error (x86)\n",
        ),
        (
            ["tcr", "0x1", "--json"],
            "kpsim decode: unknown register 'tcr': use pte, pmd, pud, pgd, esr or por (arm64); "
            "x86-pte, x86-pde, x86-pdpte, x86-pml4e, pkrs, pkru or pf-error (x86)\n",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    """Not a number, out of range, or an unknown register: one line on stderr, status 2."""
    status, out, err = run(capsys, *argv)
    assert (status, out, err) == (2, "", message)


def test_missing_value_is_a_usage_error(capsys):
    """Omitting VALUE is a one-line usage error with status 2."""
    with pytest.raises(SystemExit) as exc:
        main(["decode", "pte"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and "VALUE" in err
