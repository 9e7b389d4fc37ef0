"""Steps on the real kernel: deltas derived from pt-lifecycle.md's rules (skip off Linux)."""

import os

import pytest

from kpsim.errors import InputError
from kpsim.workloads.host import (
    HostError,
    HostTarget,
    kernel_option,
    measure_vmpte,
    thp_mode,
    vmpte_pages,
)
from kpsim.workloads.steps import load_steps, parse_steps, run_steps

from .host_support import EXAMPLES, deltas_and_notes, needs_host

pytestmark = needs_host


def step(op, **fields):
    """One ``[[step]]`` table; list values become TOML arrays of strings."""
    lines = ["[[step]]", f'op = "{op}"']
    for key, value in fields.items():
        if isinstance(value, list):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        else:
            value = f'"{value}"'
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def region(name, addr, length, *flags):
    """A private anonymous mapping at a fixed address (MAP_FIXED_NOREPLACE|NORESERVE)."""
    return step(
        "mmap", name=name, addr=addr, length=length, flags=["fixed_noreplace", "noreserve", *flags]
    )


def deltas(*steps):
    with HostTarget() as target:
        return [(r.delta, r.child_delta) for r in run_steps(parse_steps("".join(steps)), target)]


def test_s1_s2_s3_match_the_measured_deltas():
    """S1 +514 (512 PTE + PMD + PUD), S2 +33, S3 +1025 (rule 1), mmap alone +0."""
    got = deltas(
        region("R1", "16T", "1G"),
        step("touch", region="R1", stride="2M"),
        region("R2", "0x100040000000", "64M"),
        step("touch", region="R2"),
        region("R3", "32T", "512G"),
        step("touch", region="R3", stride="1G"),
    )
    assert [d for d, _ in got] == [0, 514, 0, 33, 0, 1025]


def test_munmap_frees_a_table_only_when_its_slot_is_free_of_vmas():
    """Rule 3: a partly unmapped slot keeps its table; a freed slot loses it; then PMD+PUD go."""
    got = deltas(
        region("A", "16T", "4M"),
        step("touch", region="A", stride="2M"),
        step("munmap", region="A", length="1M"),
        step("munmap", region="A", offset="2M", length="2M"),
        step("munmap", region="A", offset="1M", length="1M"),
    )
    assert [d for d, _ in got] == [0, 4, 0, -1, -3]


def test_madvise_dontneed_frees_only_whole_slots_and_never_pmd_or_pud():
    """Rule 4: DONTNEED frees PTE tables of slots wholly in range (PT_RECLAIM), never PMD/PUD."""
    got = [
        d
        for d, _ in deltas(
            region("A", "16T", "4M"),
            step("touch", region="A"),
            step("madvise", region="A", offset="1M", length="2M", advice="dontneed"),
            step("madvise", region="A", advice="dontneed"),
        )
    ]
    assert got[:3] == [0, 4, 0]
    assert got[3] == {"y": -2, "n": 0}.get(kernel_option("PT_RECLAIM") or "", got[3])


def test_mprotect_none_and_mremap_move():
    """Rule 5: mprotect (incl. none) changes nothing; rule 6: a whole move is net +0."""
    got = deltas(
        region("A", "16T", "4M"),
        step("touch", region="A"),
        step("mprotect", region="A", prot="none"),
        step("mprotect", region="A", prot="rw"),
        step("mremap", region="A", new_length="4M", new_addr="32T"),
        step("touch", region="A"),
    )
    assert [d for d, _ in got] == [0, 4, 0, 0, 0, 0]


def test_fork_copies_only_anon_vma_tables():
    """Rule 7: the child gets written private VMAs' tables, not zero-page-only or shared ones."""
    got = deltas(
        region("W", "16T", "2M"),
        step("touch", region="W", length="4K"),
        region("R", "32T", "2M"),
        step("touch", region="R", access="read"),
        region("S", "48T", "2M", "shared"),
        step("touch", region="S"),
        step("fork"),
    )
    assert got == [(0, None), (3, None), (0, None), (3, None), (0, None), (3, None), (0, 3)]


def test_thp_costs_one_deposited_table_per_huge_page():
    """Rule 2: each THP slot costs one PTE table; zapping the THP frees it."""
    if thp_mode() == "never" and kernel_option("PT_RECLAIM") != "y":
        pytest.skip("THP is off and PT_RECLAIM is not known to be on: step 4 would differ")
    got = deltas(
        region("A", "16T", "4M"),
        step("madvise", region="A", advice="hugepage"),
        step("touch", region="A", stride="2M"),
        step("madvise", region="A", length="2M", advice="dontneed"),
    )
    assert [d for d, _ in got] == [0, 0, 4, -1]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_example_matches_its_expect_notes(path):
    """Every shipped steps file gives, on the host, the deltas its '# expect' notes derive."""
    if path.stem == "thp" and thp_mode() == "never" and kernel_option("PT_RECLAIM") != "y":
        pytest.skip("THP is off and PT_RECLAIM is not known to be on")
    if "dontneed" in path.read_text() and kernel_option("PT_RECLAIM") == "n":
        pytest.skip("the '# expect' notes assume CONFIG_PT_RECLAIM=y; this kernel has it off")
    with HostTarget() as target:
        results = run_steps(load_steps(path), target)
    got, want = deltas_and_notes(path, results)
    assert got == want


def test_host_child_is_quiescent_and_measured_twice_equal():
    """The child is measured blocked in read(); the parent's own VmPTE is readable too."""
    with HostTarget() as target:
        first = target.pt_pages()
        assert first == measure_vmpte(target.pid)
        assert first > 0
    assert vmpte_pages(os.getpid()) > 0


def test_kernel_refusal_is_reported_with_the_step():
    """MAP_FIXED_NOREPLACE over an existing mapping: the kernel's EEXIST names the step."""
    text = region("A", "16T", "2M") + region("B", "16T", "2M")
    with HostTarget() as target, pytest.raises(InputError) as exc:
        run_steps(parse_steps(text, file="x.toml"), target)
    assert exc.value.line == 7
    assert "step 2 (mmap): the kernel refused it: File exists" in exc.value.problem


def test_child_death_is_a_host_error_naming_the_signal():
    """If the host child dies (a touch of unmapped memory past the checks), HostError says how."""
    with HostTarget() as target, pytest.raises(HostError, match="killed by SIGSEGV"):
        target.touch(4096, 4096, 4096, True)
