"""``kpsim decode`` of pasted crash-report text: ESR = ..., show_pte's pgd=... pte=...,
POR_EL1 = ..., from one argument or from stdin."""

from __future__ import annotations

import io
import json

import pytest

from kpsim.cli.main import main

OOPS = """\
[   12.345678] Unable to handle kernel write to read-only memory at virtual address ffff0000c0a1b008
[   12.345679] Mem abort info:
[   12.345680]   ESR = 0x000000409600004f
[   12.345681]   EC = 0x25: DABT (current EL), IL = 32 bits
[   12.345690] swapper pgtable: 4k pages, 48-bit VAs, pgdp=0000000041b5e000
[   12.345691] [ffff0000c0a1b008] pgd=10000000bfff8003, p4d=10000000bfff8003, \
pud=10000000bfff7003, pmd=10000000bfff1003, pte=10e8000100a1b707
"""


def _decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["decode", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_an_oops_from_stdin_decodes_every_value_in_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ESR, then pgd, pud, pmd, pte (the folded p4d= repeat skipped), each as
    ``kpsim decode WHAT VALUE`` would print it."""
    monkeypatch.setattr("sys.stdin", io.StringIO(OOPS))
    rc, out, _ = _decode(capsys, "-", "--json")
    assert rc == 0
    values = json.loads(out)["values"]
    assert [v["register"] for v in values] == ["esr", "pgd", "pud", "pmd", "pte"]
    assert values[0]["overlay"] is True and values[-1]["pkey"] == 1
    for v in values:  # the same words as the two-argument form
        main(["decode", str(v["register"]), str(v["raw"]), "--json"])
        assert json.loads(capsys.readouterr().out) == v


def test_one_argument_with_a_value_in_it(capsys: pytest.CaptureFixture[str]) -> None:
    """'ESR = 0x...' or 'pte=...' as one argument; POR_EL1 = ... too; the text form
    prints each value's table."""
    rc, out, _ = _decode(capsys, "ESR = 0x000000409600004f")
    assert rc == 0 and out.startswith("ESR_EL1 0x000000409600004f\n")
    _rc, out, _ = _decode(capsys, "pte=10e8000100a1b707 POR_EL1 = 0x57")
    titles = [line for line in out.splitlines() if not line.startswith((" ", "summary"))]
    assert titles == [
        "pte 0x10e8000100a1b707 (level 3 descriptor)",
        "",
        "POR_ELx 0x0000000000000057",
    ]


def test_a_p4d_that_differs_from_pgd_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """Only a repeat is folded: two different values are both decoded."""
    _rc, out, _ = _decode(capsys, "pgd=0000000000000003, p4d=0000000000001003", "--json")
    assert [v["raw"] for v in json.loads(out)["values"]] == [
        "0x0000000000000003",
        "0x0000000000001003",
    ]


@pytest.mark.parametrize(
    ("argv", "stdin", "problem"),
    [
        (("-",), "no registers here\n", "no value found in the text"),
        (("hello",), "", "unknown register 'hello'"),
        (("pte=1ffffffffffffffff",), "", "outside the 64-bit range"),
    ],
)
def test_text_without_a_value_is_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    stdin: str,
    problem: str,
) -> None:
    """Nothing to decode, or a value too wide: one line, exit status 2."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc, out, err = _decode(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and problem in err


#: an x86-64 oops as show_fault_oops, dump_pagetable and __show_regs print it: a
#: supervisor write into a direct-map page that PKS write-protects (pkey 1)
X86_OOPS = """\
[   20.100000] BUG: unable to handle page fault for address: ffff888100123008
[   20.100001] #PF: supervisor write access in kernel mode
[   20.100002] #PF: error_code(0x0023) - protection keys violation
[   20.100003] PGD 3201067 P4D 3201067 PUD 3202067 PMD 3203063 PTE 8800000100123063
[   20.100004] Oops: 0023 [#1] PREEMPT SMP
[   20.100010] PKRU: 55555554
"""


def test_an_x86_oops_decodes_every_value_in_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The #PF error code, then PGD, PUD, PMD, PTE (the folded P4D repeat skipped) and
    PKRU, each as the two-argument form prints it; the PTE carries pkey 1."""
    monkeypatch.setattr("sys.stdin", io.StringIO(X86_OOPS))
    rc, out, _ = _decode(capsys, "-", "--json")
    assert rc == 0
    values = json.loads(out)["values"]
    assert [v["register"] for v in values] == [
        "pf-error", "x86-pml4e", "x86-pdpte", "x86-pde", "x86-pte", "pkru"]  # fmt: skip
    assert "protection key" in values[0]["summary"] and values[4]["pkey"] == 1
    for v in values:
        main(["decode", str(v["register"]), str(v["raw"]), "--json"])
        assert json.loads(capsys.readouterr().out) == v


def test_arch_x86_gives_linux_level_names_their_x86_meaning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--arch x86 pmd V`` is the x86 PDE; without the option the same name is an arm64
    level-2 descriptor (the negative control); arm64's registers are refused on x86 in
    one line naming the x86 register to use."""
    value = "0x80000001002000e3"
    rc, out, _ = _decode(capsys, "--arch", "x86", "pmd", value, "--json")
    assert rc == 0
    x86 = json.loads(out)
    assert x86["register"] == "x86-pde" and x86["size"] == "2M"
    _, explicit, _ = _decode(capsys, "x86-pde", value, "--json")
    assert json.loads(explicit) == x86
    rc, out, _ = _decode(capsys, "pmd", value, "--json")
    assert rc == 0 and json.loads(out)["register"] == "pmd"
    for name, instead in (("esr", "pf-error"), ("por", "pkrs or pkru")):
        rc, out, err = _decode(capsys, "--arch", "x86", name, "0x1")
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"kpsim decode: --arch x86: {name} is arm64's; on x86 use {instead}")
