"""The x86 cost priors (report/data/costs-x86.toml, issue 18 item 5): the same schema
and provenance rules as costs.toml, laid over its priors for ``default_costs("x86")``."""

from __future__ import annotations

from importlib import resources

import pytest

from kpsim.errors import KpsimError
from kpsim.report.cost import ARCH_COSTS, SOURCES, default_costs, estimate, parse_defaults

#: the hardware events the x86 machine counts (X86Cpu.counters, X86System)
X86_EVENTS = ("pkrs_write", "invlpg", "invpcid", "cr3_write", "tlb_shootdown",
              "tlb_shootdown_ipi", "tlb_flush_user", "tlb_flush_kernel_range")  # fmt: skip


def _x86_text() -> str:
    return resources.files("kpsim.report").joinpath("data", ARCH_COSTS["x86"]).read_text()


def test_x86_priors_price_every_x86_hardware_event_with_provenance():
    """Each x86 event has a non-zero prior that is not fitted, a source and a reference."""
    costs = default_costs("x86")
    for name in X86_EVENTS:
        e = costs.entries[name]
        assert e.cycles > 0, name
        assert e.status == "unknown", name  # nothing on x86 was fitted
        assert e.source in SOURCES and e.source != "definition", name
        assert e.ref and e.history, name


def test_every_x86_entry_has_a_one_line_comment_saying_it_was_not_published():
    """As in costs.toml: a comment before each entry; an unknown one says so."""
    lines = _x86_text().splitlines()
    entries = [i for i, line in enumerate(lines) if " = { cycles" in line]
    costs = default_costs("x86")
    assert len(entries) == len(parse_defaults(_x86_text(), "costs-x86.toml").names)
    for i in entries:
        comment, name = lines[i - 1], lines[i].split(" = ")[0]
        assert comment.startswith("# "), lines[i]
        if costs.status(name) == "unknown":
            assert "not published" in comment or "never published" in comment, comment


def test_x86_table_keeps_the_software_priors_and_differs_in_hardware():
    """Software costs are costs.toml's; the x86 events cost nothing on arm64's table;
    the same counts cost more on x86 when they include a shootdown."""
    arm, x86 = default_costs(), default_costs("x86")
    for name in ("pgfault", "pgtable_alloc", "fork_pte_copy", "page_alloc.alloc"):
        assert x86[name] == arm[name]
    assert arm["pkrs_write"] == 0.0 and x86["pkrs_write"] > 0
    counts = {"pgfault": 10, "tlb_shootdown": 1, "tlb_shootdown_ipi": 3}
    assert estimate(counts, x86).total > estimate(counts, arm).total


def test_unknown_architecture_has_no_priors():
    """Asking for an architecture without a prior file is an error, not arm64's."""
    with pytest.raises(KpsimError):
        default_costs("riscv")
