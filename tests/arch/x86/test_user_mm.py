"""The generic user mm (fault, fork, munmap, exit) on x86: user page tables in RAM
walked by the hw/x86 MMU, protected by PKS like kernel ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kpsim.hw.x86.fault import PF_PK
from kpsim.machine.boot import Machine, boot
from kpsim.mm.memory import check_tree
from kpsim.mm.process import Process, mm_context
from kpsim.workloads.simtarget import SimTarget
from kpsim.workloads.steps import load_steps, run_steps


def user_byte(m: Machine, cpu: int, va: int) -> int:
    """The byte at user ``va`` as ``cpu``'s MMU translates it now."""
    got = m.hw.cpus[cpu].translate(va, user=True)
    assert isinstance(got, tuple)
    return int(m.mem.read(got[0], 1))


def test_fault_fork_munmap_exit_on_x86(boot_x86: Callable[..., Machine]) -> None:
    """Touch pages, fork (COW), write in the child, munmap, exit: tables come and go,
    the tree in RAM matches the index, and every table page is freed at the end."""
    m = boot_x86()
    ctx = mm_context(m.k, m.arch)
    before = m.k.pgtable.count()
    p = Process.create(ctx, cpu=0)
    addr = p.mmap(None, 64 << 12)
    assert addr < 1 << 47  # below x86-64's TASK_SIZE_MAX
    p.touch_range(addr, 64 << 12, write=True)
    assert user_byte(m, 0, addr) == 0xA5
    child = p.fork(cpu=1)
    child.touch(addr, write=True, value=0x5A)
    p.touch(addr)  # p current on CPU 0 again
    assert user_byte(m, 1, addr) == 0x5A and user_byte(m, 0, addr) == 0xA5  # COW
    assert check_tree(p.mm) == [] and check_tree(child.mm) == []
    p.munmap(addr, 64 << 12)
    child.exit()
    p.exit()
    assert m.k.pgtable.count() == before


def test_user_page_table_write_faults_at_default_pkrs(
    boot_x86: Callable[..., Machine], store_error_code: Callable[[Machine, int, int, int], int]
) -> None:
    """A user PTE table page is keyed: a kernel store to it faults with PK; control:
    the same machine without the feature lets the store through."""
    for hardened, expect_pk in ((True, True), (False, False)):
        m = boot_x86(hardened_pgtables=hardened)
        ctx = mm_context(m.k, m.arch)
        p = Process.create(ctx, cpu=0)
        addr = p.mmap(None, 4096)
        p.touch(addr, write=True)
        pte_pfn = p.mm.tables[3][addr >> 21]
        va = m.arch.phys_to_virt(pte_pfn << 12) + 8 * 300
        assert bool(store_error_code(m, 0, va, 0) & PF_PK) is expect_pk


def test_thp_pmd_leaves_on_x86(boot_x86: Callable[..., Machine]) -> None:
    """With THP always, a 2M-aligned touched range is PMD leaves (PSE) with deposited
    PTE tables; mprotect of one page splits one; the tree in RAM stays consistent."""
    m = boot_x86()
    p = Process.create(mm_context(m.k, m.arch, thp="always"), cpu=0)
    addr = p.mmap(None, 8 << 20)
    p.touch_range(addr, 8 << 20, write=True)
    counts = p.mm.table_counts()
    assert counts["pte_deposited"] >= 3 and check_tree(p.mm) == []
    p.mprotect(addr + (4 << 20), 4096, 1)
    p.touch(addr + (4 << 20))
    after = p.mm.table_counts()
    assert after["pte"] == counts["pte"] + 1
    assert after["pte_deposited"] == counts["pte_deposited"] - 1
    assert check_tree(p.mm) == []
    p.exit()


@pytest.mark.parametrize("name", ["fork.toml", "thp.toml", "mremap.toml", "madvise-dontneed.toml"])
def test_committed_step_files_run_on_x86(name: str) -> None:
    """The conformance step files run on the x86 machine, with the table count after
    each step that the arm64 machine gives (the generic mm's rules, arch-independent)."""
    path = Path(__file__).parents[3] / "examples" / "steps" / name
    counts = {}
    for arch in ("arm64", "x86"):
        target = SimTarget(boot(arch=arch, memory="1G"))
        counts[arch] = [r.pt_pages for r in run_steps(load_steps(path), target)]
        target.close()
    assert counts["x86"] == counts["arm64"]
    assert len(counts["x86"]) > 1
