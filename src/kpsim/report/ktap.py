"""KUnit results as the kernel prints them: KTAP version 1.

Follows ``Documentation/dev-tools/ktap.rst`` and what ``lib/kunit/executor.c`` and
``lib/kunit/test.c`` print for built-in suites (``kunit_print_suite_start``,
``kunit_print_ok_not_ok``, ``kunit_print_suite_stats``)::

    KTAP version 1
    1..1
        KTAP version 1
        # Subtest: kpkeys_hardened_pgtables
        1..5
        # write_direct_map_pgtables: pud entry at 0x...: blocked (-EFAULT)
        ...
        ok 1 write_direct_map_pgtables
        ok 2 write_kernel_image_pud # SKIP kpkeys not supported (no POE)
    # kpkeys_hardened_pgtables: pass:4 fail:0 skip:1 total:5
    # Totals: pass:4 fail:0 skip:1 total:5
    ok 1 kpkeys_hardened_pgtables

so that ``tools/testing/kunit/kunit.py parse`` and CI tools read it. A failed
expectation prints the kernel's ``KUNIT_EXPECT_EQ_MSG`` text (``EXPECTATION FAILED
at <file>``, without a line number: kpsim has none). Beyond the kernel's output, each
write that was blocked gets diagnostic lines with the ESR and FAR that the abort
handler saw, decoded (:func:`blocked_write_lines`); a real KUnit run does not print
them (the fault is fixed up silently by ``copy_to_kernel_nofault``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kpsim.hw.arm64.descriptors import LEVEL_NAME, Descriptor, level_size
from kpsim.hw.arm64.esr import decode_esr
from kpsim.report.walk import region

INDENT = "    "  # KUNIT_SUBTEST_INDENT
KUNIT_FILE = "mm/tests/kpkeys_hardened_pgtables_kunit.c"


def esr_words(esr: int) -> str:
    """``DABT (current EL), write, level 3 permission fault, overlay``."""
    w = decode_esr(esr)
    parts = [str(w["ec_name"])]
    if "fault" in w:
        parts += [str(w["access"]), str(w["fault"])]
        if w["overlay"]:
            parts.append("overlay (POR_EL1 denied it)")
    return ", ".join(parts)


def far_words(far: int, leaf: Mapping[str, Any] | None) -> str:
    """What the faulting address is: its region, and the leaf descriptor that mapped
    it when the write faulted (its level, physical address and pkey)."""
    if leaf is None:
        return f"{region(far)}, not mapped"
    level, value = int(leaf["level"]), int(leaf["value"], 16)
    desc = Descriptor.decode(value, level)
    pa = desc.output_address + (far & (level_size(level) - 1))
    kind = "page" if level == 3 else "block"
    return (
        f"{region(far)} -> PA {pa:#x}, mapped by a level {level} {kind} "
        f"({LEVEL_NAME[level]}={value:016x}) with pkey {desc.po_index}"
    )


def blocked_write_lines(check: Mapping[str, Any]) -> list[str]:
    """Diagnostic text for one check: the write, and for a blocked one ESR and FAR."""
    level, ret = check["level"], check["result"]
    verdict = "blocked (-EFAULT)" if ret == -14 else f"landed (returned {ret})"
    out = [f"{level} entry at {check['entry_va']}: copy_to_kernel_nofault() {verdict}"]
    if check.get("esr") is not None:
        esr, far = int(check["esr"], 16), int(check["far"], 16)
        out.append(f"  ESR = {esr:#018x}: {esr_words(esr)}")
        out.append(f"  FAR = {far:#018x}: {far_words(far, check.get('far_leaf'))}")
    return out


def _failure_lines(name: str, checks: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for c in checks:
        if c["result"] == c["expected"]:
            continue
        ret = c["result"]
        out += [
            f"{INDENT}# {name}: EXPECTATION FAILED at {KUNIT_FILE}",
            f"{INDENT}Expected ret == -EFAULT, but",
            f"{INDENT}    ret == {ret} ({ret & (2**64 - 1):#x})",
            f"{INDENT}    -EFAULT == -14 (0xfffffffffffffff2)",
            f"{INDENT}Direct {str(c['level']).upper()} write wasn't prevented",
        ]
    return out


def _case_lines(number: int, case: Mapping[str, Any]) -> list[str]:
    name, status = case["name"], case["status"]
    out = []
    for check in case["checks"]:
        out += [f"{INDENT}# {name}: {line}" for line in blocked_write_lines(check)]
    out += _failure_lines(name, case["checks"])
    if status == "fail" and not any(c["result"] != c["expected"] for c in case["checks"]):
        out.append(f"{INDENT}# {name}: {case['message']}")  # no entry, or the case crashed
    if status == "skip":
        out.append(f"{INDENT}ok {number} {name} # SKIP {case['message']}".rstrip())
    else:
        out.append(f"{INDENT}{'ok' if status == 'pass' else 'not ok'} {number} {name}")
    return out


def suite_status(result: Mapping[str, Any]) -> str:
    """``kunit_suite_has_succeeded``: fail if any case failed, else pass if any case
    passed, else skip."""
    if result["failed"]:
        return "fail"
    return "pass" if result["passed"] else "skip"


def ktap(result: Mapping[str, Any]) -> str:
    """The KTAP document for one suite result (``run_suite``'s dict)."""
    suite, cases = result["suite"], result["cases"]
    lines = [
        "KTAP version 1",
        "1..1",
        f"{INDENT}KTAP version 1",
        f"{INDENT}# Subtest: {suite}",
        f"{INDENT}1..{len(cases)}",
    ]
    for number, case in enumerate(cases, 1):
        lines += _case_lines(number, case)
    stats = (
        f"pass:{result['passed']} fail:{result['failed']} skip:{result['skipped']} "
        f"total:{len(cases)}"
    )
    lines += [f"# {suite}: {stats}", f"# Totals: {stats}"]
    status = suite_status(result)
    if status == "skip":
        lines.append(f"ok 1 {suite} # SKIP")
    else:
        lines.append(f"{'ok' if status == 'pass' else 'not ok'} 1 {suite}")
    return "\n".join(lines) + "\n"
