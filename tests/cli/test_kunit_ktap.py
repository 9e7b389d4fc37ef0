"""``kpsim kunit`` speaks KTAP: checked with a parser after kunit_parser.py's grammar
(tests/cli/ktap_parser.py), on the three outcomes (pass, fail with the feature off,
skip without POE), and each blocked write carries its ESR and FAR, decoded."""

from __future__ import annotations

import json
import re

import pytest

from kpsim.cli.main import main

from .ktap_parser import parse

CASES = [
    "write_direct_map_pgtables",
    "write_kernel_image_pud",
    "write_kernel_vmalloc_pte",
    "write_vmemmap_pmd",
    "write_user_pmd",
]
BASE = ["kunit", "--memory", "256M", "--linear-map", "pte"]


def _kunit(capsys: pytest.CaptureFixture[str], *opts: str) -> tuple[int, str]:
    status = main([*BASE, *opts])
    return status, capsys.readouterr().out


def _suite(text: str):  # type: ignore[no-untyped-def]
    main_test, errors = parse(text)
    assert errors == []
    assert main_test.expected_count == 1 and len(main_test.subtests) == 1
    suite = main_test.subtests[0]
    assert suite.name == "kpkeys_hardened_pgtables" and suite.expected_count == 5
    assert [t.name for t in suite.subtests] == CASES
    return suite


def test_ktap_is_the_default_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    """stdout is not a terminal (captured): KTAP, the suite header KUnit prints."""
    status, out = _kunit(capsys)
    assert status == 0
    assert out.splitlines()[:5] == [
        "KTAP version 1",
        "1..1",
        "    KTAP version 1",
        "    # Subtest: kpkeys_hardened_pgtables",
        "    1..5",
    ]
    assert out.splitlines()[-3:] == [
        "# kpkeys_hardened_pgtables: pass:5 fail:0 skip:0 total:5",
        "# Totals: pass:5 fail:0 skip:0 total:5",
        "ok 1 kpkeys_hardened_pgtables",
    ]
    suite = _suite(out)
    assert suite.status == "pass"
    assert all(t.status == "pass" for t in suite.subtests)


def test_each_blocked_write_shows_esr_and_far(capsys: pytest.CaptureFixture[str]) -> None:
    """Every check of --json appears in the KTAP log of its case with its ESR (an EL1
    write blocked by the overlay) and a FAR equal to the entry written, mapped pkey 1."""
    main([*BASE, "--json"])
    doc = json.loads(capsys.readouterr().out)
    _status, out = _kunit(capsys, "--ktap")
    suite = _suite(out)
    for case, test in zip(doc["cases"], suite.subtests, strict=True):
        esr_lines = [line for line in test.log if "ESR = " in line]
        far_lines = [line for line in test.log if "FAR = " in line]
        assert len(esr_lines) == len(far_lines) == len(case["checks"]) > 0
        for check, esr, far in zip(case["checks"], esr_lines, far_lines, strict=True):
            assert check["esr"] == "0x000000409600004f"
            assert "DABT (current EL), write, level 3 permission fault, overlay" in esr
            assert int(check["far"], 16) == int(check["entry_va"], 16)
            assert re.search(rf"FAR = {check['far']}: linear -> PA 0x[0-9a-f]+, ", far)
            assert far.endswith("with pkey 1")


def test_feature_off_every_case_is_not_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """Negative control: with the feature off every write lands; KTAP says not ok with
    the kernel's expectation text, the suite fails, no ESR is shown, exit 1."""
    status, out = _kunit(capsys, "--no-hardened-pgtables")
    assert status == 1
    suite = _suite(out)
    assert suite.status == "fail"
    assert all(t.status == "fail" for t in suite.subtests)
    assert "ESR = " not in out
    assert "Direct PMD write wasn't prevented" in suite.subtests[-1].log
    assert out.splitlines()[-1] == "not ok 1 kpkeys_hardened_pgtables"


def test_no_poe_every_case_skips(capsys: pytest.CaptureFixture[str]) -> None:
    """Without POE each case is ``ok N name # SKIP reason`` and so is the suite."""
    status, out = _kunit(capsys, "--no-poe")
    assert status == 0
    suite = _suite(out)
    assert suite.status == "skip"
    assert all(t.status == "skip" and "POE" in t.skip_reason for t in suite.subtests)


def test_text_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    """--text prints the table even when piped, with the decoded ESR lines."""
    status, out = _kunit(capsys, "--text")
    assert status == 0
    assert not out.startswith("KTAP") and "passed 5, failed 0, skipped 0" in out
    assert "ESR = 0x000000409600004f" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1..1\nok 1 a\n", "no KTAP version line"),
        ("KTAP version 1\nok 1 a\n", "missing plan line"),
        ("KTAP version 1\n1..2\nok 1 a\n", "expected 2 tests, got 1"),
        ("KTAP version 1\n1..1\nok 2 a\n", "expected test number 1"),
        (
            "KTAP version 1\n1..1\n  KTAP version 1\n  # Subtest: s\n  1..1\n"
            "  not ok 1 a\nok 1 s\n",
            "'s' is ok but a subtest failed",
        ),
        (
            "KTAP version 1\n1..1\n  KTAP version 1\n  # Subtest: s\n  1..1\n  ok 1 a\nok 1 t\n",
            "expected result for 's', got 't'",
        ),
    ],
)
def test_the_parser_rejects_bad_ktap(text: str, problem: str) -> None:
    """The parser the checks rely on can fail: each malformation is reported."""
    _main, errors = parse(text)
    assert any(problem in e for e in errors), errors
