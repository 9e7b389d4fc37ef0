"""A small KTAP version 1 parser for the tests, after the grammar of the kernel's
``tools/testing/kunit/kunit_parser.py`` (``parse_test``):

    test      := KTAP_START [TEST_HEADER] [TEST_PLAN] subtest* TEST_RESULT   (a subtest)
    main      := KTAP_START TEST_PLAN subtest*                              (the whole log)
    KTAP_START  ``KTAP version 1`` (``TAP version 13/14`` accepted)
    TEST_HEADER ``# Subtest: <name>``
    TEST_PLAN   ``1..N``
    TEST_RESULT ``ok|not ok <n> [- ]<name>[ # SKIP <reason>]``

Leading whitespace is ignored as in kunit_parser (indentation is only required to be
consistent by ktap.rst); any other line is a diagnostic or unknown line, kept in the
log of the test it precedes. Every departure kunit_parser reports as an error (no
version line, no plan, a wrong test number, a result whose name does not match the
``# Subtest:`` header, fewer results than planned) is collected in ``errors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KTAP_START = re.compile(r"^\s*(KTAP version [0-9]+|TAP version 1[34])$")
TEST_HEADER = re.compile(r"^\s*# Subtest: (.*)$")
TEST_PLAN = re.compile(r"^\s*1\.\.([0-9]+)$")
TEST_RESULT = re.compile(r"^\s*(ok|not ok) ([0-9]+) (- )?([^#]*)( # .*)?$")
TEST_RESULT_SKIP = re.compile(r"^\s*(ok|not ok) ([0-9]+) (- )?(.*) # SKIP ?(.*)$")


@dataclass
class Test:
    name: str = ""
    status: str = ""  # "pass", "fail", "skip"
    skip_reason: str = ""
    expected_count: int | None = None
    subtests: list[Test] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class Parser:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.pos = 0
        self.errors: list[str] = []

    def peek(self) -> str | None:
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def pop(self) -> str:
        line = self.lines[self.pos]
        self.pos += 1
        return line

    def error(self, msg: str) -> None:
        self.errors.append(f"line {self.pos + 1}: {msg}")

    def _log(self) -> list[str]:
        """Diagnostic and unknown lines up to the next structural line."""
        out = []
        while (line := self.peek()) is not None and not any(
            r.match(line) for r in (KTAP_START, TEST_HEADER, TEST_PLAN, TEST_RESULT)
        ):
            out.append(self.pop().strip())
        return out

    def parse_main(self) -> Test:
        main = Test(name="main")
        main.log += self._log()
        line = self.peek()
        if line is None or not KTAP_START.match(line):
            self.error("no KTAP version line")
            return main
        self.pop()
        self._plan(main)
        self._subtests(main)
        main.log += self._log()
        if self.peek() is not None:
            self.error(f"unexpected line after the last test: {self.peek()!r}")
        return main

    def _plan(self, test: Test) -> None:
        line = self.peek()
        m = TEST_PLAN.match(line) if line is not None else None
        if m is None:
            self.error("missing plan line")
            return
        self.pop()
        test.expected_count = int(m.group(1))

    def _subtests(self, parent: Test) -> None:
        n = 0
        while parent.expected_count is None or n < parent.expected_count:
            log = self._log()
            line = self.peek()
            if line is None:
                break
            if TEST_PLAN.match(line):
                self.error("unexpected plan line")
                self.pop()
                continue
            n += 1
            parent.subtests.append(self._test(n, log))
        if parent.expected_count is not None and n != parent.expected_count:
            self.error(f"expected {parent.expected_count} tests, got {n}")

    def _test(self, number: int, log: list[str]) -> Test:
        test = Test(log=log)
        line = self.peek() or ""
        nested = bool(KTAP_START.match(line) or TEST_HEADER.match(line))
        if KTAP_START.match(line):
            self.pop()
        if (m := TEST_HEADER.match(self.peek() or "")) is not None:
            self.pop()
            test.name = m.group(1)
        if nested:
            self._plan(test)
            self._subtests(test)
            test.log += self._log()
        self._result(test, number)
        return test

    def _result(self, test: Test, number: int) -> None:
        line = self.peek()
        m = TEST_RESULT.match(line) if line is not None else None
        if m is None:
            self.error(f"missing result line for test {number}")
            test.status = "fail"
            return
        self.pop()
        skip = TEST_RESULT_SKIP.match(line or "")
        name = (skip.group(4) if skip else m.group(4)).strip()
        if int(m.group(2)) != number:
            self.error(f"expected test number {number}, got {m.group(2)}")
        if test.name and name != test.name:
            self.error(f"expected result for {test.name!r}, got {name!r}")
        test.name = name
        if skip:
            test.status, test.skip_reason = "skip", skip.group(5).strip()
        else:
            test.status = "pass" if m.group(1) == "ok" else "fail"
        failed_child = any(t.status == "fail" for t in test.subtests)
        if failed_child and test.status == "pass":
            self.error(f"{name!r} is ok but a subtest failed")


def parse(text: str) -> tuple[Test, list[str]]:
    """The main test and the list of errors (empty for valid KTAP)."""
    p = Parser(text)
    main = p.parse_main()
    return main, p.errors
