"""``kpsim decode`` x86 kinds: x86-pte/pde/pdpte/pml4e, pkrs/pkru, pf-error; exit 2 on bad input."""

from __future__ import annotations

import json

import pytest

from kpsim.cli.main import main
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import PF_PK, PF_PROT, PF_WRITE
from kpsim.hw.x86.pkeys import set_key


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["decode", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_x86_pte_fields(capsys: pytest.CaptureFixture[str]) -> None:
    value = e.leaf_entry(0x1_0123_4000, rw=True, nx=True, key=1, dirty=True)
    status, out, _ = run(capsys, "x86-pte", hex(value), "--json")
    doc = json.loads(out)
    assert status == 0
    assert doc["address"] == "0x101234000" and doc["pkey"] == 1 and doc["nx"] is True
    assert doc["writable"] is True and doc["user"] is False and doc["dirty"] is True
    assert doc["size"] == "4K" and doc["global"] is False
    _, text, _ = run(capsys, "x86-pte", hex(value))
    assert "62:59  PKEY     1" in text and "no execute" in text


@pytest.mark.parametrize(("what", "level", "size"), [("x86-pde", 2, "2M"), ("x86-pdpte", 3, "1G")])
def test_large_leaves(what: str, level: int, size: str, capsys: pytest.CaptureFixture[str]) -> None:
    value = e.leaf_entry(0x4000_0000, level, g=True)
    _, out, _ = run(capsys, what, hex(value), "--json")
    doc = json.loads(out)
    assert doc["kind"] == "leaf" and doc["size"] == size and doc["global"] is True
    # the same bits with PS clear are a table pointer
    _, out, _ = run(capsys, what, hex(value & ~e.PS), "--json")
    assert json.loads(out)["kind"] == "table"


def test_pml4e_is_always_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "x86-pml4e", hex(e.table_entry(0x100_0000) | e.PS))
    assert "reserved (must be 0 in a PML4E)" in out and "next table" in out


def test_pkrs(capsys: pytest.CaptureFixture[str]) -> None:
    value = set_key(set_key(0, 1, wd=True), 3, ad=True)
    _, out, _ = run(capsys, "pkrs", hex(value), "--json")
    doc = json.loads(out)
    assert doc["pkeys"][1]["wd"] is True and doc["pkeys"][1]["ad"] is False
    assert doc["pkeys"][3]["ad"] is True and doc["pkeys"][0]["access"] == "read/write"
    assert doc["summary"] == "pkey 1 read only (WD), pkey 3 no data access (AD)"
    _, out, _ = run(capsys, "pkru", "0")
    assert "every pkey read/write" in out


def test_pf_error(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "pf-error", hex(PF_PROT | PF_WRITE | PF_PK), "--json")
    doc = json.loads(out)
    assert doc["pk"] is True and doc["p"] is True and doc["w_r"] is True and doc["u_s"] is False
    assert doc["summary"] == "supervisor write, protection key"
    _, out, _ = run(capsys, "pf-error", "0x14")
    assert "summary: user instruction fetch, page not present" in out
    _, out, _ = run(capsys, "pf-error", "0x8040")
    assert "SGX" in out and "shadow-stack" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pkrs", "0x100000000"], "pkrs value 0x100000000: bits 63:32 are reserved"),
        (["pf-error", "0x100000000"], "a #PF error code is 32 bits"),
        (["x86-pte", "zz"], "x86-pte value: not a number: 'zz'"),
        (["x86-pt", "0x1"], "unknown register 'x86-pt'"),
    ],
)
def test_bad_input_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
